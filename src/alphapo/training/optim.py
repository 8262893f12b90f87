"""Optimisation and launch set-up: AdamW (fused, or Kahan-compensated for low-precision weights), the
learning-rate schedule, the precision policy, the DeepSpeed config adapter, and the checks that the
launcher's processes and engine are the ones the trainer got (:func:`check_world_size`,
:func:`check_engine`).

Precision policy (mixed precision as in ``accelerate`` and the FSDP / DeepSpeed mixed-precision
policies): the weights and AdamW state are held in ``model.dtype``, float32 by default, and
``train.mixed_precision`` (``bf16`` / ``fp16``) runs forward and backward under autocast. The shipped
configs train this way. A weight update at a learning rate of 1e-6 is about 1e-6 of the weight, far below
bfloat16's resolution (8 significant bits: a relative step of 2^-8 = 3.9e-3), so AdamW applied to
bfloat16 weights rounds almost every update away (``benchmarks/bf16_updates.py``: 5 steps at lr 5e-7 on
the tiny Llama changed 0.69% of bfloat16 weights against 74% in float32). A run that explicitly holds its weights in a 16-bit dtype
(``model.dtype: bfloat16``) therefore gets :class:`KahanAdamW`, which carries the rounding error of every
update in a compensation buffer (Kahan summation, as in Zamirai et al., "Revisiting BFloat16 Training",
and the ``optimi`` library) so that small updates accumulate instead of vanishing.

Learning-rate schedules are ``transformers.get_scheduler``'s (``cosine``, ``linear``,
``constant_with_warmup``), so the factors are those of TRL / the transformers ``Trainer``: linear warmup
``step / warmup``, then cosine ``0.5 (1 + cos(pi p))`` with ``p = (step - warmup) / (total - warmup)``,
linear ``(total - step) / (total - warmup)`` or constant 1.
"""

from __future__ import annotations

import math
import os

import torch

from alphapo.errors import UserError

# our config names -> transformers.get_scheduler names
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def make_scheduler(optimizer, *, kind: str, total: int, warmup: int):
    """``transformers.get_scheduler`` for ``train.lr_scheduler`` (see the module docstring for factors).

    Example: total 10, warmup 1, cosine -> step 0: 0; step 1: 1; step 4: 0.5 (1 + cos(pi/3)) = 0.75.
    """
    from transformers import get_scheduler

    return get_scheduler(SCHEDULES[kind], optimizer, num_warmup_steps=warmup, num_training_steps=total)


def warmup_steps(total: int, ratio: float) -> int:
    """Warmup steps: ``ceil(ratio x total)`` (TRL's ``warmup_ratio`` rounds up the same way), at most
    ``total - 1``.

    Deviations: ``transformers`` does not cap, so when ``ceil(ratio x total) >= total`` every step runs in
    warmup and the first step's factor ``0 / warmup`` is 0: a one-step run (``max_steps=1`` with the
    default ratio 0.1) trains nothing and saves the initial weights. The cap leaves at least one step
    at the full rate (the trainer says so on stderr, :func:`warmup_capped_note`); ``warmup_ratio=1``
    therefore warms up over every step but the last.

    Example: total 1, ratio 0.1 -> 0 (not 1); total 10, ratio 1.0 -> 9; total 10, ratio 0.1 -> 1.
    """
    return min(math.ceil(ratio * total), max(total - 1, 0))


def warmup_capped_note(total: int, ratio: float) -> str | None:
    """The one-line stderr note when :func:`warmup_steps` capped the warmup (None when it did not)."""
    uncapped = math.ceil(ratio * total)
    if uncapped <= warmup_steps(total, ratio):
        return None
    return (f"train.warmup_ratio={ratio} x {total} optimizer steps gives {uncapped} warmup steps, which "
            f"would leave no step at the full learning rate (the first warmup step's rate is 0); "
            f"warmup is {warmup_steps(total, ratio)} steps")


def fused_adamw_supported(device: torch.device, params) -> bool:
    """True when this torch build has a fused AdamW kernel for ``device`` and every parameter dtype.

    torch checks this only at the first ``step()`` (lazily, then raises), so the trainer asks up front,
    for the device the parameters will live on after ``accelerator.prepare``.
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # pragma: no cover - private helper moved: be conservative
        devices = {"cuda", "cpu"}
    return device.type in devices and all(p.is_floating_point() for p in params)


def make_adamw(groups: list[dict], *, fused: bool, device: torch.device, **kwargs) -> torch.optim.Optimizer:
    """AdamW over ``groups``: :class:`KahanAdamW` when a parameter is 16-bit, else ``torch.optim.AdamW``,
    with the fused kernel when asked for and supported.

    The fused kernel (one kernel per step for all parameters instead of a loop of elementwise ops) is
    what TRL/transformers select with ``optim="adamw_torch_fused"``; it computes the same update
    (Loshchilov & Hutter, decoupled weight decay) with a different operation order, so results match the
    unfused optimizer to float rounding, not bit for bit. The trainer asks for it only when the run is
    not sharded: FSDP and DeepSpeed own the optimizer step (DeepSpeed substitutes its own optimizer,
    FSDP1 flattens parameters), so there the plain ``AdamW`` is kept. Where ``device`` or a parameter
    dtype has no fused kernel (:func:`fused_adamw_supported`) the plain ``AdamW`` is used.
    """
    params = [p for g in groups for p in g["params"]]
    if any(p.dtype in (torch.bfloat16, torch.float16) for p in params):
        return KahanAdamW(groups, **kwargs)
    if fused and fused_adamw_supported(device, params):
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


class KahanAdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter, decoupled weight decay) with Kahan-compensated weight updates.

    For each parameter ``p`` (any float dtype) the update ``u`` is computed in float32 exactly as
    ``torch.optim.AdamW`` does (moments ``m``, ``v`` kept in float32), then added with compensation::

        y = u + c;  p_new = round(p + y);  c = y - (p_new - p)

    where ``c`` (state ``"compensation"``, float32) holds what rounding to ``p``'s dtype lost. The sum
    ``p + c`` follows the float32 trajectory to float32 rounding, and ``p`` itself moves as soon as the
    accumulated updates reach its resolution. For float32 parameters ``c`` stays at rounding level and
    the result matches ``torch.optim.AdamW`` to float rounding.

    Why ``c`` is float32: held in bfloat16 (as Zamirai et al. and ``optimi`` do, to save memory), ``c``
    has bfloat16's 8 significant bits itself, so once it has grown to about half a step of ``p`` (2^-9 for
    weights near 1), an update smaller than ``c``'s own resolution (2^-17 there, i.e. lr 5e-7 steps)
    rounds away in ``u + c`` and is lost: 2000 steps at lr 5e-7 moved weights near 1 only 29% as far as
    float32 AdamW (near 0.02, where ``c``'s resolution is finer, 100%).

    Deviations: no ``amsgrad``, ``maximize``, ``foreach`` or ``fused`` options; the compensation is
    float32 rather than the weight dtype. Memory: 2 (weight) + 2 (gradient) + 8 (moments) + 4
    (compensation) = 16 bytes per bfloat16 parameter, the same as float32 weights with AdamW.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def load_state_dict(self, state_dict: dict) -> None:
        """``Optimizer.load_state_dict``, keeping the moments and the compensation in float32 (torch casts
        every floating state tensor to its parameter's dtype, which would round them to bfloat16 on
        resume)."""
        moments = {int(i): {k: v for k, v in st.items() if k in ("exp_avg", "exp_avg_sq", "compensation")}
                   for i, st in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for i, saved in moments.items():
            for k, v in saved.items():
                self.state[params[i]][k] = v.to(device=params[i].device, dtype=torch.float32)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    state["compensation"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = float(state["step"])
                grad = p.grad.float()
                m, v, comp = state["exp_avg"], state["exp_avg_sq"], state["compensation"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)
                p32 = p.float()
                update = (m / denom).mul_(-lr / (1 - beta1 ** step))
                if wd:
                    update.add_(p32, alpha=-lr * wd)
                y = update.add_(comp)
                new = (p32 + y).to(p.dtype)
                comp.copy_(y.sub_(new.float() - p32))
                p.copy_(new)
        return loss


KAHAN_NOTE = ("trainable weights held in 16 bits (model.dtype): AdamW with Kahan-compensated updates keeps "
              "small updates from rounding away; model.dtype=float32 with train.mixed_precision=bf16 is the "
              "usual mixed-precision set-up")


def check_precision(*, weights_dtype: str, mixed_precision: str, sharded: bool) -> None:
    """Refuse (``UserError``) precision settings that cannot train correctly: 16-bit weights under FSDP /
    DeepSpeed (their mixed-precision policies keep float32 master weights themselves: load float32 and
    set ``train.mixed_precision``), and float16 weights with ``fp16`` loss scaling (``GradScaler`` cannot
    unscale float16 gradients)."""
    if weights_dtype == "float32":
        return
    if sharded:
        raise UserError(f"model.dtype={weights_dtype} holds the weights in 16 bits, which FSDP/DeepSpeed "
                        f"do not support here; set model.dtype=float32 and train.mixed_precision=bf16 "
                        f"(float32 master weights, 16-bit compute)")
    if weights_dtype == "float16" and mixed_precision == "fp16":
        raise UserError("model.dtype=float16 with train.mixed_precision=fp16: fp16 loss scaling cannot "
                        "unscale float16 gradients; set model.dtype=float32 (float32 master weights)")


def precision_mismatch(launcher: str | None, configured: str) -> str | None:
    """The one-line warning when the launcher's precision (``ACCELERATE_MIXED_PRECISION``) differs from ours.

    ``accelerate launch`` exports the accelerate config's ``mixed_precision`` (``no``/``fp16``/``bf16``/
    ``fp8``) in that variable; the trainer creates its ``Accelerator`` with ``train.mixed_precision``,
    which wins. None when the variable is unset or empty (not launched) or the two agree.
    """
    if not launcher or launcher.lower() == configured:
        return None
    return (f"the launcher asks for mixed_precision={launcher.lower()} (ACCELERATE_MIXED_PRECISION), "
            f"train.mixed_precision={configured} is used; set both the same to silence this")


def deepspeed_config_for_loop(ds_config: dict, *, per_device_batch_size: int, num_processes: int,
                              max_grad_norm: float | None) -> dict:
    """A copy of a DeepSpeed config dict set up for alphapo's loop (which accumulates by itself).

    - ``gradient_accumulation_steps = 1``: the loop runs the micro-batches of an optimizer step and marks
      the last one (``sync_gradients``), where accelerate calls ``engine.step()``. With DeepSpeed's own
      accumulation ``g > 1`` the engine would also divide every micro-batch loss by ``g`` (the loop
      already scales by ``1 / global batch``) and step only every ``g``-th boundary.
    - ``train_micro_batch_size_per_gpu = per_device_batch_size`` and ``train_batch_size =
      per_device_batch_size * num_processes`` (DeepSpeed checks ``train_batch_size = micro x accumulation
      x world size``; accelerate would otherwise read the micro-batch from a DataLoader the loop does not
      have, and fail).
    - ``gradient_clipping``: when ``"auto"`` or absent, ``max_grad_norm`` (``0.0`` = off when it is None),
      because DeepSpeed clips inside ``engine.step()`` and ignores ``accelerator.clip_grad_norm_``'s
      value; an explicit number is kept.

    Example: ``{"gradient_accumulation_steps": 4, "gradient_clipping": "auto"}`` with per-device batch 2,
    8 processes, max_grad_norm 1.0 -> accumulation 1, micro-batch 2, train batch 16, clipping 1.0.
    """
    out = dict(ds_config)
    out["gradient_accumulation_steps"] = 1
    out["train_micro_batch_size_per_gpu"] = per_device_batch_size
    out["train_batch_size"] = per_device_batch_size * num_processes
    if out.get("gradient_clipping", "auto") == "auto":
        out["gradient_clipping"] = float(max_grad_norm) if max_grad_norm is not None else 0.0
    return out


def launcher_world_size(environ=os.environ) -> int:
    """The number of processes the launcher started (``WORLD_SIZE`` of torchrun / accelerate launch)."""
    try:
        return max(1, int(environ.get("WORLD_SIZE") or 1))
    except ValueError:
        raise UserError(f"WORLD_SIZE={environ.get('WORLD_SIZE')!r} is not an integer") from None


def check_world_size(launched: int, seen: int) -> None:
    """Refuse a run where the launcher started ``launched`` processes but the trainer sees ``seen``:
    each process would train on its own, all racing on one output folder."""
    if launched > 1 and seen != launched:
        raise UserError(f"the launcher started {launched} processes (WORLD_SIZE) but the trainer sees {seen}: "
                        f"each would train alone on the same output_dir; on CPU set ACCELERATE_USE_CPU=true, "
                        f"or launch with examples/accelerate/cpu_2proc.yaml or torchrun (docs/distributed.md)")


def check_engine(environ, distributed_type: str) -> None:
    """Refuse a run where the launcher asked for FSDP or DeepSpeed (``ACCELERATE_USE_FSDP`` /
    ``ACCELERATE_USE_DEEPSPEED``) but accelerate set up something else: without a GPU accelerate runs
    neither, and the run would silently train unsharded (plain DDP)."""
    for engine in ("FSDP", "DEEPSPEED"):
        asked = str(environ.get(f"ACCELERATE_USE_{engine}", "")).lower() in ("1", "true", "yes")
        if asked and distributed_type != engine:
            raise UserError(f"the launcher asks for {engine} but accelerate set up {distributed_type}: accelerate "
                            f"runs {engine} on GPUs only; on CPU use examples/accelerate/cpu_2proc.yaml (DDP)")


def has_accelerator_device() -> bool:
    found = getattr(torch, "accelerator", None)
    return bool(found.is_available()) if found is not None else torch.cuda.is_available()
