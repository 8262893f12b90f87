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


def test_kahan_adamw_on_bf16_weights_near_one_keeps_every_small_update():
    """2000 AdamW steps at lr 5e-7 with a one-signed gradient on 1024 weights in [0.9, 1.1): every step
    moves a weight by ~lr, 1e-3 in all (float64 AdamW is the reference). A bfloat16 compensation lost
    most of that once it reached ~1e-3 (its own resolution there, 2^-17 = 7.6e-6, is 15x the update):
    weight + compensation moved 29% as far. Held in float32 it follows float64 to < 0.5% of the move,
    and the bfloat16 weight is the float64 trajectory rounded (within one bfloat16 step)."""
    torch.manual_seed(0)
    p0 = (0.9 + 0.2 * torch.rand(1024)).bfloat16().double()  # representable: all runs start equal
    grads = [(0.5 + torch.rand(1024)).double() for _ in range(2000)]
    ref, _ = _adam_run(torch.optim.AdamW, torch.float64, p0, grads, lr=5e-7, weight_decay=0.0)
    kahan, opt = _adam_run(KahanAdamW, torch.bfloat16, p0, grads, lr=5e-7, weight_decay=0.0)
    moved = p0 - ref.detach()
    assert moved.min() > 0.9e-3 and moved.max() < 1.01e-3  # ~lr per step, as derived
    effective = kahan.detach().double() + opt.state[kahan]["compensation"].double()
    assert ((p0 - effective) / moved).min() > 0.995
    assert ((effective - ref.detach()).abs() / moved).max() < 0.005
    assert (kahan.detach().double() - ref.detach()).abs().max() <= 2.0 ** -7  # one bf16 step below 1


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
    assert comp and all(v.dtype == torch.float32 for v in comp)
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
    assert state["exp_avg"].dtype == torch.float32 and state["compensation"].dtype == torch.float32
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    step(model2, opt2, 3)
    assert torch.equal(model2.weight.detach(), expected)


def _effective_bf16_weights(ckpt_dir, model_dir) -> dict[str, torch.Tensor]:
    """A checkpoint's bfloat16 weights + its Kahan compensation, by parameter name. The optimizer's
    parameter indices follow the trainer's groups: matrices (weight decay), then the rest."""
    from transformers import AutoModelForCausalLM

    names = [n for n, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()]
    shapes = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    order = [n for n in names if shapes[n].ndim >= 2] + [n for n in names if shapes[n].ndim < 2]
    final = load_file(ckpt_dir / "model.safetensors")
    opt = load_file(ckpt_dir / "optimizer.safetensors")
    return {n: final[n].double() + opt[f"{i}.compensation"].double() for i, n in enumerate(order) if n in final}


def test_explicit_bf16_weights_at_lr_5e7_move_as_far_as_float32(fake_losses, tiny_model_dir, pairs_path,
                                                                tmp_path):
    """5 steps at lr 5e-7, model.dtype=bfloat16 (no autocast) against model.dtype=float32: the bfloat16
    weights alone barely move (each update is ~1/100 of a bfloat16 step), but weight + Kahan
    compensation changes as many weights, by as much on average, as float32 does. Plain AdamW on
    bfloat16 weights (no compensation) changed 0.69% of them."""
    common = ("loss.name=simpo", "train.learning_rate=5e-7", "train.max_steps=5", "train.lr_scheduler=constant",
              "train.warmup_ratio=0", "train.global_batch_size=2", "train.mixed_precision=no")
    out32, out16 = tmp_path / "fp32", tmp_path / "bf16"
    train(_config(tiny_model_dir, pairs_path, out32, *common, "model.dtype=float32"))
    # a 6-step run checkpoints after step 5 (no checkpoint is written at the last step)
    train(_config(tiny_model_dir, pairs_path, out16, *common, "model.dtype=bfloat16", "train.max_steps=6",
                  "logging.save_steps=5"))
    before = load_file(tiny_model_dir / "model.safetensors")
    after32 = load_file(out32 / "final" / "model.safetensors")
    effective = _effective_bf16_weights(out16 / "checkpoints" / "step-000005", tiny_model_dir)
    assert set(effective) == set(after32)
    n = sum(v.numel() for v in after32.values())
    d32 = {k: after32[k].double() - before[k].double() for k in after32}
    d16 = {k: effective[k] - before[k].bfloat16().double() for k in effective}
    frac32 = sum(int((d != 0).sum()) for d in d32.values()) / n
    frac16 = sum(int((d != 0).sum()) for d in d16.values()) / n
    mag32 = sum(float(d.abs().sum()) for d in d32.values()) / n
    mag16 = sum(float(d.abs().sum()) for d in d16.values()) / n
    weights16 = load_file(out16 / "checkpoints" / "step-000005" / "model.safetensors")
    alone = sum(int((weights16[k].float() != before[k].bfloat16().float()).sum()) for k in after32) / n
    assert alone < 0.05  # the compensation carries the update, as derived
    assert frac32 > 0.5 and frac16 >= 0.98 * frac32
    assert 0.9 < mag16 / mag32 < 1.1
