"""Precision: float32 master weights with bf16 autocast by default, Kahan-compensated AdamW for weights
explicitly held in 16 bits, and refusals where a precision set-up cannot train correctly.

Why: a weight update at lr 5e-7 is ~5e-7 of a weight, far below bfloat16's resolution (a relative step of
2^-8), so AdamW applied to bfloat16 weights rounds nearly every update away.
"""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import _config

from alphapo.errors import UserError
from alphapo.training import load_config
from alphapo.training.optim import KahanAdamW, check_precision, make_adamw
from alphapo.training.trainer import train

PAPER_CONFIGS = [p.name for p in resources.files("alphapo.configs").iterdir()
                 if p.name.endswith(".yaml") and p.name != "tiny_cpu.yaml"]


def _changed_fraction(model_dir, final_dir) -> float:
    before = load_file(model_dir / "model.safetensors")
    after = load_file(final_dir / "model.safetensors")
    changed = sum(int((after[k].float() != before[k].float()).sum()) for k in before)
    return changed / sum(v.numel() for v in before.values())


def test_shipped_bf16_configs_at_lr_5e7_change_as_many_weights_as_float32(fake_losses, tiny_model_dir,
                                                                            pairs_path, tmp_path):
    """5 steps at lr 5e-7 with each shipped config's precision settings (model.dtype, mixed_precision)
    change as many weights as a float32 run; with bfloat16 weights and plain AdamW it was 0.75%."""
    settings = set()
    for name in PAPER_CONFIGS:
        with resources.as_file(resources.files("alphapo.configs") / name) as path:
            cfg = load_config(path)
        settings.add((cfg.model.dtype, cfg.train.mixed_precision))
    assert ("float32", "bf16") in settings  # the paper configs train in bf16 compute
    common = ("loss.name=simpo", "train.learning_rate=5e-7", "train.max_steps=5", "train.lr_scheduler=constant",
              "train.warmup_ratio=0", "train.global_batch_size=2")
    out32 = tmp_path / "fp32"
    train(_config(tiny_model_dir, pairs_path, out32, *common))
    reference = _changed_fraction(tiny_model_dir, out32 / "final")
    assert reference > 0.5
    for i, (dtype, mp) in enumerate(sorted(settings)):
        out = tmp_path / f"shipped{i}"
        train(_config(tiny_model_dir, pairs_path, out, *common, f"model.dtype={dtype}",
                      f"train.mixed_precision={mp}"))
        assert _changed_fraction(tiny_model_dir, out / "final") >= 0.98 * reference, (dtype, mp)


def _adam_run(cls, dtype, p0, grads, **kw):
    p = torch.nn.Parameter(p0.clone().to(dtype))
    opt = cls([p], betas=(0.9, 0.999), eps=1e-8, **kw)
    for g in grads:
        p.grad = g.to(dtype)
        opt.step()
    return p, opt


def test_kahan_adamw_on_bf16_weights_follows_the_float32_trajectory():
    """20 AdamW steps at lr 5e-7 on 4096 weights (std 0.02, the same gradients for every run): float32
    changes ~all weights by ~2e-6; plain AdamW on bf16 keeps ~99% unchanged; Kahan's weight +
    compensation follows the float32 trajectory to < 2% of the update."""
    torch.manual_seed(0)
    p0 = torch.randn(4096) * 0.02
    grads = [torch.randn(4096) for _ in range(20)]
    p32, _ = _adam_run(torch.optim.AdamW, torch.float32, p0, grads, lr=5e-7, weight_decay=0.0)
    plain, _ = _adam_run(torch.optim.AdamW, torch.bfloat16, p0, grads, lr=5e-7, weight_decay=0.0)
    kahan, opt = _adam_run(KahanAdamW, torch.bfloat16, p0, grads, lr=5e-7, weight_decay=0.0)
    p32, plain = p32.detach(), plain.detach()
    start = p0.bfloat16().float()
    assert (p32 != p0).float().mean() > 0.99
    assert (plain.float() != start).float().mean() < 0.05  # the updates round away
    effective = kahan.detach().float() + opt.state[kahan]["compensation"].float() - start
    update = p32 - p0
    assert (effective - update).abs().mean() < 0.02 * update.abs().mean()


def test_kahan_adamw_on_float32_weights_is_adamw():
    """With float32 weights the compensation stays at rounding level: same result as torch AdamW (with
    decoupled weight decay) to float rounding."""
    torch.manual_seed(1)
    p0 = torch.randn(512)
    grads = [torch.randn(512) for _ in range(10)]
    ours = _adam_run(KahanAdamW, torch.float32, p0, grads, lr=1e-2, weight_decay=0.1)[0].detach()
    theirs = _adam_run(torch.optim.AdamW, torch.float32, p0, grads, lr=1e-2, weight_decay=0.1)[0].detach()
    assert (theirs - p0).abs().mean() > 1e-2  # the weights moved
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_make_adamw_picks_kahan_for_16_bit_weights():
    w16 = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.bfloat16))
    w32 = torch.nn.Parameter(torch.zeros(2, 2))
    assert isinstance(make_adamw([{"params": [w16]}], fused=True, device=torch.device("cpu"), lr=1e-3), KahanAdamW)
    assert type(make_adamw([{"params": [w32]}], fused=True, device=torch.device("cpu"), lr=1e-3)) is torch.optim.AdamW


def test_check_precision_refusals_and_note():
    check_precision(weights_dtype="float32", mixed_precision="bf16", sharded=True)
    with pytest.raises(UserError, match=r"model.dtype=bfloat16 .*FSDP/DeepSpeed.*model.dtype=float32"):
        check_precision(weights_dtype="bfloat16", mixed_precision="bf16", sharded=True)
    with pytest.raises(UserError, match="cannot unscale float16 gradients"):
        check_precision(weights_dtype="float16", mixed_precision="fp16", sharded=False)
    check_precision(weights_dtype="bfloat16", mixed_precision="no", sharded=False)  # allowed: Kahan AdamW


def test_explicit_bf16_weights_train_with_kahan_state_in_the_checkpoint(fake_losses, tiny_model_dir, pairs_path,
                                                                       tmp_path, capsys):
    out = tmp_path / "bf16"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "model.dtype=bfloat16", "train.max_steps=2", "train.warmup_ratio=0",
                  "logging.save_steps=1"))
    assert "Kahan-compensated" in capsys.readouterr().err
    opt = load_file(out / "checkpoints" / "step-000001" / "optimizer.safetensors")
    comp = [v for k, v in opt.items() if k.endswith(".compensation")]
    assert comp and all(v.dtype == torch.bfloat16 for v in comp)
    assert any(bool(v.abs().sum() > 0) for v in comp)  # rounding errors carried, not dropped


def test_kahan_state_survives_a_checkpoint_round_trip_in_float32(tmp_path):
    """torch's load_state_dict casts state tensors to the parameter dtype; Kahan's float32 moments must
    come back as saved (bit for bit), and the next step must equal the uninterrupted one."""
    from alphapo.training import checkpoint as ckpt

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4).to(torch.bfloat16)
        opt = KahanAdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return model, opt, sched

    def step(model, opt, seed):
        torch.manual_seed(seed)
        model(torch.randn(3, 8, dtype=torch.bfloat16)).float().pow(2).sum().backward()
        opt.step()
        opt.zero_grad()

    model, opt, sched = setup()
    for s in range(3):
        step(model, opt, s)
    path = ckpt.save_checkpoint(tmp_path, 3, model=model, optimizer=opt, scheduler=sched, trainer_state={})
    saved = {k: v.clone() for k, v in opt.state[model.weight].items()}
    step(model, opt, 3)
    expected = model.weight.detach().clone()
    model2, opt2, sched2 = setup()
    ckpt.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    state = opt2.state[model2.weight]
    assert state["exp_avg"].dtype == torch.float32 and state["compensation"].dtype == torch.bfloat16
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    step(model2, opt2, 3)
    assert torch.equal(model2.weight.detach(), expected)
