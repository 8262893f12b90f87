"""The optimizer factory: fused AdamW where torch has the kernel, same update as the plain AdamW."""

from __future__ import annotations

import torch

from alphapo.training.optim import fused_adamw_supported, make_adamw


def _run(fused: bool, steps: int = 5):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(3))
    opt = make_adamw([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
                     fused=fused, device=torch.device("cpu"), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    x = torch.randn(8, 4)
    for _ in range(steps):
        opt.zero_grad()
        ((x @ w + b) ** 2).mean().backward()
        opt.step()
    return opt, w.detach(), b.detach()


def test_fused_adamw_on_cpu_matches_plain_adamw():
    """torch has a fused CPU AdamW kernel: it is selected, and 5 steps agree with the loop version."""
    fused, w_f, b_f = _run(True)
    plain, w_p, b_p = _run(False)
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    assert torch.allclose(w_f, w_p, atol=1e-6, rtol=0) and torch.allclose(b_f, b_p, atol=1e-6, rtol=0)
    assert not torch.equal(w_p, _run(False, steps=0)[1])  # the parameters moved (a non-vacuous check)


def test_fused_falls_back_when_the_device_has_no_kernel():
    """No fused kernel for the target device (``meta``) or for a non-float parameter: plain AdamW."""
    p = torch.nn.Parameter(torch.zeros(2))
    meta, cpu = torch.device("meta"), torch.device("cpu")
    assert not make_adamw([{"params": [p]}], fused=True, device=meta, lr=1e-3).defaults["fused"]
    assert make_adamw([{"params": [p]}], fused=True, device=cpu, lr=1e-3).defaults["fused"]
    assert not fused_adamw_supported(torch.device("cpu"), [torch.zeros(2, dtype=torch.long)])
