"""The training loop: ``train(config) -> TrainResult``, on ``accelerate``, for any loss in ``alphapo.losses``.

Read top to bottom, a run is:

1. resolve the config, pick the loss callable and find which inputs it takes (``requires`` + signature);
2. load + tokenise the data (``alphapo.data``), hold out an eval split, check scores exist if needed;
3. if the loss needs reference log-probs: read them from the on-disk cache, or load the reference model,
   compute them once, cache them and free the model (``reference.py``); reference-free losses skip this;
4. load the policy (optionally LoRA, gradient checkpointing), AdamW (fused kernel unless sharded),
   warmup + cosine schedule;
5. for each optimizer step: the global batch (``data.plan_epoch``) is split into length-sorted
   micro-batches; each micro-batch is *one* forward over chosen and rejected together
   (``logps.sequence_logps``); per-example losses are summed and divided by the global batch size, so
   accumulation and data parallelism give the gradient of the global-batch mean; gradients are clipped,
   AdamW steps, the schedule steps;
6. every ``logging_steps``: diagnostics (``metrics.py``) to ``OUT/metrics.jsonl``, TensorBoard and the
   progress bar; every ``eval_steps``: the same on the eval split, keeping ``OUT/best/`` by
   ``logging.best_metric``; every ``save_steps``: an atomic checkpoint (``checkpoint.py``);
7. the final model (LoRA merged) with tokenizer and a model card goes to ``OUT/final/``.

A non-finite loss or gradient norm stops the run with :class:`NonFiniteLossError` naming the step and
the example ids; nothing is written after it, so the last checkpoint stays the last good one.

Exact resume: data order is a pure function of (seed, epoch), and a checkpoint holds parameters,
AdamW state, schedule and RNG states, so a resumed run replays the same arithmetic (bit for bit on CPU).

Deviations from TRL's DPOTrainer: the reference log-probs are always precomputed (and cached); the
learning rate logged at step ``s`` is the one used for the update of step ``s`` (TRL logs the next one).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphapo.errors import AlphapoError, UserError
from alphapo.training import checkpoint as ckpt
from alphapo.training.config import (
    LOSS_TENSOR_INPUTS,
    TrainConfig,
    resolve_accumulation,
    save_config,
    to_dict,
    validate,
    validate_loss_params,
)
from alphapo.training.data import (
    data_fingerprint,
    example_length,
    is_multi,
    load_examples,
    plan_epoch,
    split_eval,
    split_global_batch,
    steps_per_epoch,
)
from alphapo.training.logps import accepts_logits_to_keep, collate_sequences, sequence_logps
from alphapo.training.metrics import preference_metrics

REF_INPUTS = frozenset({"ref_chosen_logps", "ref_rejected_logps", "ref_logps"})


class NonFiniteLossError(AlphapoError):
    """The loss or gradient norm became NaN/inf; the message names the step and the example ids."""


@dataclass
class TrainResult:
    """What a finished run produced. ``reference_forwards`` counts reference-model forward passes."""

    output_dir: Path
    final_dir: Path
    global_step: int
    train_metrics: dict[str, float] = field(default_factory=dict)  # the last logged train record
    eval_metrics: dict[str, float] = field(default_factory=dict)  # the last eval record
    best_metric: float | None = None
    best_step: int | None = None
    reference_forwards: int = 0


# --------------------------------------------------------------------------------------------------
# pure helpers


def lr_factor(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Linear warmup ``step / warmup``, then cosine to 0 (``0.5 (1 + cos(pi p))`` with
    ``p = (step - warmup) / (total - warmup)``), linear to 0, or constant: the formulas of
    ``transformers.get_cosine_schedule_with_warmup`` / ``get_linear_schedule_with_warmup``.
    Example: total 10, warmup 1 -> step 0: 0; step 1: 1; step 4: 0.5 (1 + cos(pi/3)) = 0.75.
    """
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def loss_inputs_spec(loss_fn) -> tuple[frozenset[str], frozenset[str]]:
    """(tensor inputs the loss accepts, tensor inputs it requires), from its signature + ``requires``."""
    accepted = frozenset(inspect.signature(loss_fn).parameters) & LOSS_TENSOR_INPUTS
    required = frozenset(getattr(loss_fn, "requires", frozenset()))
    return accepted, required


# keys that may change between a run and its resumption (they do not change the arithmetic of past steps)
RESUMABLE_CHANGES = ("resume", "output_dir", "logging.", "train.max_steps", "train.epochs",
                     "reference.cache_dir", "reference.use_cache", "reference.batch_size")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "columns":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and the current one."""
    def allowed(key: str) -> bool:
        return any(key.startswith(r) if r.endswith(".") else key == r for r in RESUMABLE_CHANGES)

    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not allowed(k))


def needs_reference(loss_fn, hparams: dict[str, Any], *, accepted: frozenset[str], required: frozenset[str],
                    multi: bool) -> bool:
    """Whether this loss, with these hyper-parameters, needs reference log-probs.

    ``requires`` answers for most losses. A loss may need a reference only for some hyper-parameters
    (``rloo`` with a KL penalty ``beta > 0``), so a loss that *accepts* reference inputs without
    requiring them is probed once on small dummy tensors without them: if it complains about a
    reference input, the reference is loaded.
    """
    if required & REF_INPUTS:
        return True
    if not accepted & REF_INPUTS:
        return False
    g = torch.Generator().manual_seed(0)
    shape = (2, 3) if multi else (2,)
    dummy = {"logps": -5 - torch.rand(shape, generator=g), "lengths": torch.full(shape, 4.0),
             "scores": torch.rand(shape, generator=g), "chosen_logps": -4 - torch.rand(2, generator=g),
             "rejected_logps": -6 - torch.rand(2, generator=g), "chosen_lengths": torch.full((2,), 4.0),
             "rejected_lengths": torch.full((2,), 5.0), "chosen_scores": torch.tensor([2.0, 3.0]),
             "rejected_scores": torch.tensor([1.0, 0.5]), "chosen_nll": torch.tensor([1.0, 1.1])}
    try:
        loss_fn(**{k: v for k, v in dummy.items() if k in accepted}, **hparams)
    except Exception as err:  # noqa: BLE001 - only a complaint about a reference input matters here
        return any(name in str(err) for name in REF_INPUTS)
    return False


_DROPOUT_ATTRS = ("attention_dropout", "attn_dropout", "dropout", "hidden_dropout", "resid_dropout")


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability of ``model`` to 0: ``nn.Dropout`` modules and the float rates that
    attention modules pass to a functional dropout (Llama's ``attention_dropout``).

    Deviations from TRL: ``trl.trainer.utils.disable_dropout_in_model`` zeroes ``nn.Dropout`` modules
    only, which leaves Llama-style functional attention dropout on.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for attr in _DROPOUT_ATTRS:
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)


def pairs_from_multi(example: dict[str, Any]) -> dict[str, Any]:
    """Best- vs worst-scored response of a k-response example as a pair (AlphaPO section 4.1 recipe)."""
    scores = example["scores"]
    best = max(range(len(scores)), key=lambda i: scores[i])
    worst = min(range(len(scores)), key=lambda i: scores[i])
    return {"id": example["id"], "prompt_input_ids": example["prompt_input_ids"],
            "chosen_input_ids": example["responses_input_ids"][best],
            "rejected_input_ids": example["responses_input_ids"][worst],
            "chosen_score": float(scores[best]), "rejected_score": float(scores[worst])}


def multi_from_pair(example: dict[str, Any]) -> dict[str, Any]:
    """A pair as a k = 2 multi-response example (scores required)."""
    return {"id": example["id"], "prompt_input_ids": example["prompt_input_ids"],
            "responses_input_ids": [example["chosen_input_ids"], example["rejected_input_ids"]],
            "scores": [example.get("chosen_score"), example.get("rejected_score")]}


def _check_examples(examples: list[dict[str, Any]], *, multi: bool, required: frozenset[str], where: str):
    if not examples:
        raise UserError(f"{where}: no examples")
    if multi:
        k = len(examples[0]["responses_input_ids"])
        for ex in examples:
            if len(ex["responses_input_ids"]) != k:
                raise UserError(f"{where}: example {ex['id']!r} has {len(ex['responses_input_ids'])} "
                                f"responses, the first has {k}; multi-response losses need the same k")
            if any(s is None for s in ex.get("scores") or [None]):
                raise UserError(f"{where}: example {ex['id']!r} lacks scores; multi-response losses "
                                f"need a score per response")
    else:
        for key in ("chosen_score", "rejected_score"):
            if key.replace("score", "scores") in required:
                bad = [ex["id"] for ex in examples if ex.get(key) is None]
                if bad:
                    raise UserError(f"{where}: the loss needs {key.replace('score', 'scores')} but "
                                    f"{len(bad)} example(s) lack {key}, e.g. id {bad[0]!r}")


# --------------------------------------------------------------------------------------------------
# the forward + loss of one micro-batch


def forward_loss(model, examples: list[dict[str, Any]], *, loss_fn, hparams: dict[str, Any],
                 accepted: frozenset[str], multi: bool, ref: dict[str, torch.Tensor] | None,
                 indices: list[int], pad_id: int, trim: bool):
    """Per-example losses ``(B,)`` and detached per-example stats for one micro-batch.

    One forward over ``2B`` (pairwise: chosen rows then rejected rows) or ``B k`` sequences. ``ref``
    holds the cached reference logps of the whole split, indexed by ``indices``.
    """
    prompts, comps = [], []
    if multi:
        k = len(examples[0]["responses_input_ids"])
        for ex in examples:
            for r in ex["responses_input_ids"]:
                prompts.append(ex["prompt_input_ids"])
                comps.append(r)
    else:
        prompts = [ex["prompt_input_ids"] for ex in examples] * 2
        comps = [ex["chosen_input_ids"] for ex in examples] + [ex["rejected_input_ids"] for ex in examples]
    batch = collate_sequences(prompts, comps, pad_id)
    logps, lengths = sequence_logps(model, batch, trim=trim)
    device = logps.device
    b = len(examples)
    idx = torch.tensor(indices, dtype=torch.long)
    if multi:
        logps, lengths = logps.view(b, k), lengths.view(b, k)
        scores = torch.tensor([ex["scores"] for ex in examples], dtype=torch.float32, device=device)
        avail = {"logps": logps, "lengths": lengths, "scores": scores}
        if ref is not None:
            avail["ref_logps"] = ref["ref_logps"][idx].to(device)
    else:
        c_lp, r_lp = logps[:b], logps[b:]
        c_len, r_len = lengths[:b], lengths[b:]
        avail = {"chosen_logps": c_lp, "rejected_logps": r_lp, "chosen_lengths": c_len,
                 "rejected_lengths": r_len, "chosen_nll": -c_lp / c_len}
        for key in ("chosen_score", "rejected_score"):
            if all(ex.get(key) is not None for ex in examples):
                avail[key + "s"] = torch.tensor([ex[key] for ex in examples], dtype=torch.float32,
                                                device=device)
        if ref is not None:
            avail["ref_chosen_logps"] = ref["ref_chosen_logps"][idx].to(device)
            avail["ref_rejected_logps"] = ref["ref_rejected_logps"][idx].to(device)
    out = loss_fn(**{k_: v for k_, v in avail.items() if k_ in accepted}, **hparams)
    losses = out.losses
    # per-example stats for diagnostics: for k responses, the best-/worst-scored response plays
    # chosen/rejected (the loss contract's convention for .chosen_rewards / .rejected_rewards)
    if multi:
        best = scores.argmax(dim=1, keepdim=True)
        worst = scores.argmin(dim=1, keepdim=True)
        stats = {"chosen_logps": logps.gather(1, best)[:, 0], "rejected_logps": logps.gather(1, worst)[:, 0],
                 "chosen_lengths": lengths.gather(1, best)[:, 0],
                 "rejected_lengths": lengths.gather(1, worst)[:, 0]}
        if ref is not None:
            stats["ref_chosen_logps"] = avail["ref_logps"].gather(1, best)[:, 0]
            stats["ref_rejected_logps"] = avail["ref_logps"].gather(1, worst)[:, 0]
    else:
        stats = {k_: avail[k_] for k_ in ("chosen_logps", "rejected_logps", "chosen_lengths",
                                            "rejected_lengths")}
        if ref is not None:
            stats["ref_chosen_logps"] = avail["ref_chosen_logps"]
            stats["ref_rejected_logps"] = avail["ref_rejected_logps"]
    stats["chosen_rewards"] = out.chosen_rewards
    stats["rejected_rewards"] = out.rejected_rewards
    stats["losses"] = losses
    stats = {k_: v.detach().float().cpu() for k_, v in stats.items()}
    return losses, stats, batch.num_tokens


class _Window:
    """Per-example stats accumulated between two log records."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.grad_norms: list[float] = []
        self.tokens = 0
        self.seconds = 0.0
        self.steps = 0
        self.lr = 0.0

    def add(self, stats: dict[str, torch.Tensor]):
        for k, v in stats.items():
            self.stats.setdefault(k, []).append(v)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) for k, v in self.stats.items()}


def _gather_stats(accelerator, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if accelerator.num_processes == 1:
        return stats
    from accelerate.utils import gather_object

    gathered = gather_object([{k: v.tolist() for k, v in stats.items()}])
    keys = {k for part in gathered for k in part}  # a process with no eval examples sends {}
    return {k: torch.tensor([x for part in gathered for x in part.get(k, [])]) for k in sorted(keys)}


def _sum_across(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="sum").item())


def _window_metrics(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    return preference_metrics(**{k: stats[k] for k in (
        "chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths", "chosen_rewards",
        "rejected_rewards", "losses")}, ref_chosen_logps=stats.get("ref_chosen_logps"),
        ref_rejected_logps=stats.get("ref_rejected_logps"))


# --------------------------------------------------------------------------------------------------
# I/O at the edges


class _Logger:
    """Appends records to OUT/metrics.jsonl (and TensorBoard) on the main process."""

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool):
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
            except ImportError:
                print("alphapo train: tensorboard is not installed; logging to metrics.jsonl only",
                      file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written by a run that was killed before its next save)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        if lines:
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:  # a record torn by the kill: written after the checkpoint
                lines.pop()
        keep = [line for line in lines if json.loads(line).get("step", 0) <= step]
        ckpt.atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # strict JSON: a non-finite value (e.g. an fp16-overflow grad norm) is written as null
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, allow_nan=False) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    tag = k if k.startswith("eval/") else f"train/{k}"
                    self.writer.add_scalar(tag, v, record["step"])
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _save_pretrained_atomic(model, tokenizer, dest: Path, *, card: str | None = None,
                            state_dict: dict | None = None) -> None:
    """Save an HF-format model (safetensors) + tokenizer into ``dest`` via a temp folder and rename.

    ``state_dict`` is the full (gathered) state dict under FSDP / DeepSpeed ZeRO-3
    (``accelerator.get_state_dict``); None uses the model's own parameters.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.make_temp_dir(dest.parent, f".tmp-{dest.name}-")
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if card is not None:
            (tmp / "README.md").write_text(card)
        old = None
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{os.getpid()}"
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def model_card(config: TrainConfig, *, step: int, train_metrics: dict, eval_metrics: dict) -> str:
    """A short README.md: base model, loss, hyper-parameters, final metrics."""
    t = config.train
    hp = ", ".join(f"{k}={v}" for k, v in config.loss.params.items()) or "defaults"
    lines = [
        "---", "library_name: transformers", "tags: [alphapo, preference-optimization]", "---", "",
        f"# {Path(config.output_dir).name}", "",
        f"Fine-tuned from `{config.model.name_or_path}` with alphapo, loss **{config.loss.name}** ({hp}).",
        "", "## Training", "",
        f"- optimizer steps: {step}; epochs: {t.epochs}; learning rate {t.learning_rate} "
        f"({t.lr_scheduler}, warmup ratio {t.warmup_ratio}); AdamW (weight decay {t.weight_decay})",
        f"- per-device batch {t.per_device_batch_size}, global batch {t.global_batch_size or 'derived'}, "
        f"max grad norm {t.max_grad_norm}, precision {t.mixed_precision}, seed {t.seed}",
        f"- LoRA: {'r=%d alpha=%d' % (config.model.lora.r, config.model.lora.alpha) if config.model.lora.enabled else 'no'}",  # noqa: E501
        f"- data: `{config.data.train_path}`", "", "## Final metrics", "",
        "| metric | value |", "|---|---|",
    ]
    keys = ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
            "lnorm/margin/mean", "kl/seq_k1")
    for source in (train_metrics, eval_metrics):
        for k, v in source.items():
            if k.removeprefix("eval/") in keys and isinstance(v, float):
                lines.append(f"| {k if k.startswith('eval/') else 'train/' + k} | {v:.6g} |")
    lines += ["", "Full resolved config: `config.yaml` of the run; curves: `alphapo plot-run OUT`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# the run


def _load_model(name_or_path: str, config: TrainConfig):
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, config.model.dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype,
                                                    trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {name_or_path!r}: {err}") from None


def _reference_logps(config: TrainConfig, examples, *, pad_id: int, accelerator, counter: list[int],
                     split: str) -> dict[str, torch.Tensor]:
    from alphapo.training import reference as refmod

    ref_path = config.reference.name_or_path or config.model.name_or_path
    cache_dir = Path(config.reference.cache_dir) if config.reference.cache_dir else refmod.default_cache_dir()
    key = refmod.cache_key(refmod.model_fingerprint(ref_path), data_fingerprint(examples),
                           f"{config.model.dtype}|{config.train.mixed_precision}")
    if config.reference.use_cache:
        cached = refmod.load_cached(cache_dir, key, len(examples))
        if cached is not None:
            return cached
    tensors = None
    if accelerator.is_main_process:
        model = _load_model(ref_path, config).to(accelerator.device)
        model.config.use_cache = False
        original_forward = model.forward

        def counting_forward(*args, **kwargs):
            counter[0] += 1
            return original_forward(*args, **kwargs)

        model.forward = counting_forward
        with accelerator.autocast():
            tensors = refmod.compute_reference_logps(
                model, examples, pad_id=pad_id, batch_size=config.reference.batch_size,
                progress=config.logging.progress_bar)
        del model
        refmod.store_cached(cache_dir, key, tensors,
                            {"model": ref_path, "split": split, "n": str(len(examples))})
    accelerator.wait_for_everyone()
    if tensors is None:
        tensors = refmod.load_cached(cache_dir, key, len(examples))
        if tensors is None:
            raise AlphapoError(f"reference cache {cache_dir} is not shared between processes; set "
                               f"reference.cache_dir to a shared folder")
    return tensors


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


def make_adamw(groups: list[dict], *, fused: bool, device: torch.device, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``groups``, with the fused kernel when asked for and supported.

    The fused kernel (one kernel per step for all parameters instead of a loop of elementwise ops) is
    what TRL/transformers select with ``optim="adamw_torch_fused"``; it computes the same update
    (Loshchilov & Hutter, decoupled weight decay) with a different operation order, so results match the
    unfused optimizer to float rounding, not bit for bit. The trainer asks for it only when the run is
    not sharded: FSDP and DeepSpeed own the optimizer step (DeepSpeed substitutes its own optimizer,
    FSDP1 flattens parameters), so there the plain ``AdamW`` is kept. Where ``device`` or a parameter
    dtype has no fused kernel (:func:`fused_adamw_supported`) the plain ``AdamW`` is used.
    """
    params = [p for g in groups for p in g["params"]]
    if fused and fused_adamw_supported(device, params):
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` with ``config.loss`` on ``config.data``; see the module docstring."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    validate(config)
    hf_logging.disable_progress_bar()  # "Loading weights"/"Writing shards" bars would bury ours
    t, lg = config.train, config.logging
    loss_fn = validate_loss_params(config.loss)
    hparams = dict(config.loss.params)
    accepted, required = loss_inputs_spec(loss_fn)
    multi = bool(getattr(loss_fn, "multi_response", False))
    need_ref = needs_reference(loss_fn, hparams, accepted=accepted, required=required, multi=multi)

    # Accelerator state is a process-wide singleton: forget the precision of an earlier train() call in
    # this process (the distributed PartialState is kept)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=t.mixed_precision)
    accum = resolve_accumulation(t, accelerator.num_processes)
    global_batch = t.per_device_batch_size * accum * accelerator.num_processes
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    set_seed(t.seed)

    # ---- data
    tokenizer = AutoTokenizer.from_pretrained(config.model.name_or_path,
                                              trust_remote_code=config.model.trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    d = config.data

    def note(msg: str) -> None:
        if accelerator.is_main_process:
            print(f"alphapo train: {msg}", file=sys.stderr)

    mismatch = precision_mismatch(os.environ.get("ACCELERATE_MIXED_PRECISION"), t.mixed_precision)
    if mismatch:
        note(f"warning: {mismatch}")
    load_kw = dict(columns=d.columns, skip_invalid=d.skip_invalid, max_length=d.max_length,
                   max_prompt_length=d.max_prompt_length, prompt_truncation=d.prompt_truncation, log=note)
    train_ex = load_examples(d.train_path, tokenizer, split=d.split, **load_kw)
    if d.max_examples is not None:
        train_ex = train_ex[: d.max_examples]
    if d.eval_path:
        eval_ex = load_examples(d.eval_path, tokenizer, split=d.eval_split, **load_kw)
    else:
        train_ex, eval_ex = split_eval(train_ex, d.eval_fraction, t.seed)
    convert = multi_from_pair if multi else pairs_from_multi
    train_ex = [e if is_multi(e) == multi else convert(e) for e in train_ex]
    eval_ex = [e if is_multi(e) == multi else convert(e) for e in eval_ex]
    _check_examples(train_ex, multi=multi, required=required, where=d.train_path)
    if eval_ex:
        _check_examples(eval_ex, multi=multi, required=required, where=d.eval_path or "eval split")

    # ---- reference log-probs (cached), only when the loss needs them
    ref_forwards = [0]
    train_ref = eval_ref = None
    if need_ref:
        train_ref = _reference_logps(config, train_ex, pad_id=pad_id, accelerator=accelerator,
                                     counter=ref_forwards, split="train")
        if eval_ex:
            eval_ref = _reference_logps(config, eval_ex, pad_id=pad_id, accelerator=accelerator,
                                        counter=ref_forwards, split="eval")

    # ---- policy, optimizer, schedule
    model = _load_model(config.model.name_or_path, config)
    model.config.use_cache = False
    if config.model.disable_dropout:  # before LoRA, so lora.dropout still applies
        disable_dropout(model)
    if config.model.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.model.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        lo = config.model.lora
        model = get_peft_model(model, PeftLoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                                     target_modules=lo.target_modules, task_type="CAUSAL_LM"))
        if config.model.gradient_checkpointing:
            model.enable_input_require_grads()
    trim = accepts_logits_to_keep(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    sharded = accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")
    optimizer = make_adamw(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        fused=not sharded, device=accelerator.device, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
        eps=t.adam_epsilon)
    spe = steps_per_epoch(len(train_ex), global_batch)
    total_steps = t.epochs * spe if t.max_steps is None else min(t.max_steps, t.epochs * spe)
    warmup = math.ceil(t.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total_steps, warmup=warmup, kind=t.lr_scheduler))
    if accelerator.distributed_type.value == "DEEPSPEED":
        ds = accelerator.state.deepspeed_plugin.deepspeed_config  # edited in place: accelerate reads it
        ds.update(deepspeed_config_for_loop(ds, per_device_batch_size=t.per_device_batch_size,
                                            num_processes=accelerator.num_processes,
                                            max_grad_norm=t.max_grad_norm))
        if ds["gradient_clipping"] != (t.max_grad_norm or 0.0):
            note(f"DeepSpeed config gradient_clipping={ds['gradient_clipping']} differs from "
                 f"train.max_grad_norm={t.max_grad_norm}; DeepSpeed clips with its own value "
                 f"(set it to \"auto\" to use train.max_grad_norm)")
    model, optimizer = accelerator.prepare(model, optimizer)
    if sharded and (lg.save_steps or config.resume):
        raise UserError("logging.save_steps / resume are supported for single-process and DDP runs only; "
                        "under FSDP/DeepSpeed the final and best models are saved, but not resumable "
                        "checkpoints (unset logging.save_steps)")

    def scaler_state() -> dict | None:
        if accelerator.scaler is None:
            return None
        return {k: (float(v) if isinstance(v, torch.Tensor) else v)
                for k, v in accelerator.scaler.state_dict().items()}

    # ---- resume
    ckpt_root = out / "checkpoints"
    logger = _Logger(out, enabled=accelerator.is_main_process, tensorboard=lg.tensorboard)
    state = {"global_step": 0, "best_metric": None, "best_step": None}
    latest = ckpt.find_latest(ckpt_root) if config.resume else None
    if latest is not None:
        changed = resume_conflicts(ckpt.read_trainer_state(latest).get("config", {}), to_dict(config))
        if changed:
            raise UserError(f"cannot resume from {latest}: the config changed in {changed}; exact resume "
                            f"needs the same data, loss, model and optimisation settings")
        state.update(ckpt.load_checkpoint(latest, model=accelerator.unwrap_model(model),
                                          optimizer=optimizer, scheduler=scheduler))
        if state.get("scaler") and accelerator.scaler is not None:  # fp16 loss scale (plain JSON numbers)
            accelerator.scaler.load_state_dict(state["scaler"])
        logger.truncate_after(state["global_step"])
        note(f"resumed from {latest} (step {state['global_step']})")
    elif accelerator.is_main_process and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run in an old folder starts a fresh log

    lengths = [example_length(e) for e in train_ex]
    run = dict(loss_fn=loss_fn, hparams=hparams, accepted=accepted, multi=multi, pad_id=pad_id, trim=trim)
    win = _Window()
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    bar = tqdm(total=total_steps, initial=state["global_step"], desc=f"train {config.loss.name}",
               disable=not (lg.progress_bar and accelerator.is_main_process), dynamic_ncols=True)

    def flush(step: int) -> None:
        nonlocal last_train
        if win.steps == 0:
            return
        stats = _gather_stats(accelerator, win.tensors())
        tokens = _sum_across(accelerator, float(win.tokens))
        rec = {"step": step, "epoch": step / spe, "split": "train", **_window_metrics(stats),
               "grad_norm": sum(win.grad_norms) / len(win.grad_norms),
               "learning_rate": win.lr, "tokens_per_second": tokens / max(win.seconds, 1e-9),
               "steps_per_second": win.steps / max(win.seconds, 1e-9)}
        logger.log(rec)
        last_train = rec
        bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_second']:.0f}")
        win.reset()

    def evaluate(step: int) -> dict[str, float]:
        model.eval()
        mine = list(range(accelerator.process_index, len(eval_ex), accelerator.num_processes))
        mine.sort(key=lambda i: -example_length(eval_ex[i]))
        parts = []
        with torch.no_grad():
            for s in range(0, len(mine), t.per_device_batch_size):
                idx = mine[s: s + t.per_device_batch_size]
                _, st, _ = forward_loss(model, [eval_ex[i] for i in idx], ref=eval_ref, indices=idx, **run)
                parts.append(st)
        model.train()
        stats = {k: torch.cat([p[k] for p in parts]) if parts else torch.zeros(0) for k in
                 (parts[0] if parts else {})}
        stats = _gather_stats(accelerator, stats)
        rec = {"step": step, "epoch": step / spe, "split": "eval",
               **{f"eval/{k}": v for k, v in _window_metrics(stats).items()}}
        logger.log(rec)
        return rec

    def maybe_best(step: int, rec: dict[str, float]) -> None:
        value = rec.get(lg.best_metric)
        if value is None:
            raise UserError(f"logging.best_metric={lg.best_metric!r} is not an eval metric; e.g. "
                            f"'eval/loss', 'eval/rewards/accuracies'")
        best = state["best_metric"]
        better = best is None or (value < best if lg.best_mode == "min" else value > best)
        if better:
            state["best_metric"], state["best_step"] = value, step
            full_state = accelerator.get_state_dict(model) if sharded else None
            if accelerator.is_main_process:
                _save_pretrained_atomic(accelerator.unwrap_model(model), tokenizer, out / "best",
                                        state_dict=full_state)
                ckpt.atomic_write_text(out / "best" / "best.json",
                                       json.dumps({"step": step, lg.best_metric: value}) + "\n")

    def save(step: int) -> None:
        flush(step)
        if accelerator.is_main_process:
            ckpt.save_checkpoint(ckpt_root, step, model=accelerator.unwrap_model(model), optimizer=optimizer,
                                 scheduler=scheduler, keep=lg.save_total_limit,
                                 trainer_state={"global_step": step, "best_metric": state["best_metric"],
                                                "best_step": state["best_step"], "config": to_dict(config),
                                                "scaler": scaler_state()})
        accelerator.wait_for_everyone()

    # ---- the loop
    step = state["global_step"]
    try:
        while step < total_steps:
            epoch, in_epoch = divmod(step, spe)
            plan = plan_epoch(lengths, global_batch=global_batch, seed=t.seed, epoch=epoch,
                              group_by_length=d.group_by_length)
            for batch in plan[in_epoch:]:
                if step >= total_steps:
                    break
                t0 = time.perf_counter()
                micro = split_global_batch(batch, lengths, micro_batch=t.per_device_batch_size,
                                           process_index=accelerator.process_index,
                                           num_processes=accelerator.num_processes)
                weight = accelerator.num_processes / len(batch)  # -> gradient of the global-batch mean
                if not micro:  # a short final batch left this process nothing: stay in DDP lockstep
                    micro, weight = [batch[:1]], 0.0
                bad_ids: list[str] = []
                win.lr = optimizer.param_groups[0]["lr"]
                for j, mb in enumerate(micro):
                    sync = j == len(micro) - 1
                    ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                    # tell accelerate which micro-batch ends the step: under DeepSpeed, backward() runs
                    # engine.step() at that boundary only (the DS config's own accumulation must be 1)
                    accelerator.gradient_state._set_sync_gradients(sync)
                    with ctx:
                        losses, stats, ntok = forward_loss(model, [train_ex[i] for i in mb], ref=train_ref,
                                                           indices=mb, **run)
                        finite = torch.isfinite(losses.detach())
                        if not bool(finite.all()):
                            bad_ids += [train_ex[i]["id"] for i, ok in zip(mb, finite.tolist()) if not ok]
                        accelerator.backward(losses.sum() * weight)
                    if weight > 0:
                        win.add(stats)
                        win.tokens += ntok
                n_bad = _sum_across(accelerator, float(len(bad_ids)))
                if n_bad:
                    raise NonFiniteLossError(
                        f"non-finite loss at optimizer step {step + 1} (epoch {epoch}); example id(s) "
                        f"{bad_ids[:20] or '(on another process)'}; the last good checkpoint is kept in "
                        f"{ckpt_root}; lower the learning rate or check these examples")
                max_norm = t.max_grad_norm if t.max_grad_norm is not None else float("inf")
                norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
                grad_norm = float(norm) if norm is not None else float("nan")  # DeepSpeed may not report
                # under fp16 loss scaling an overflow is routine: the scaler skips the step and lowers
                # the scale, so only an unscaled run treats a non-finite gradient norm as fatal
                if norm is not None and not math.isfinite(grad_norm) and accelerator.scaler is None:
                    raise NonFiniteLossError(
                        f"non-finite gradient norm at optimizer step {step + 1} (epoch {epoch}); batch "
                        f"example ids {[train_ex[i]['id'] for i in batch][:20]}; the last good checkpoint "
                        f"is kept in {ckpt_root}")
                optimizer.step()
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                win.grad_norms.append(grad_norm)
                win.steps += 1
                win.seconds += time.perf_counter() - t0
                bar.update(1)
                if step % lg.logging_steps == 0:
                    flush(step)
                if eval_ex and lg.eval_steps and step % lg.eval_steps == 0 and step < total_steps:
                    last_eval = evaluate(step)
                    maybe_best(step, last_eval)
                if lg.save_steps and step % lg.save_steps == 0 and step < total_steps:
                    save(step)
        flush(step)
        if eval_ex:
            last_eval = evaluate(step)
            maybe_best(step, last_eval)
    finally:
        bar.close()
        logger.close()

    # ---- final model
    final = out / "final"
    final_model = accelerator.unwrap_model(model)
    full_state = None
    if config.model.lora.enabled:
        final_model = final_model.merge_and_unload()
    elif sharded:
        full_state = accelerator.get_state_dict(model)  # a collective: every process calls it
    if accelerator.is_main_process:
        card = model_card(config, step=step, train_metrics=last_train, eval_metrics=last_eval)
        _save_pretrained_atomic(final_model, tokenizer, final, card=card, state_dict=full_state)
    accelerator.wait_for_everyone()
    return TrainResult(output_dir=out, final_dir=final, global_step=step, train_metrics=last_train,
                       eval_metrics=last_eval, best_metric=state["best_metric"], best_step=state["best_step"],
                       reference_forwards=ref_forwards[0])
