"""The training loop: ``train(config) -> TrainResult``, on ``accelerate``, for any loss in ``alphapo.losses``.

``train()`` is a recipe of named steps, each a plain function of this module:

1. :func:`resolve_loss`: pick the loss callable, find which inputs it takes (``requires`` + signature)
   and whether it needs reference log-probs; :func:`start_accelerator`: the ``Accelerator`` (joining
   the launcher's processes, printing the world size); :func:`locked_output_dir`: lock ``output_dir``,
   recover a save killed midway, refuse a folder holding a run unless ``resume`` / ``overwrite``;
2. :func:`prepare_data`: load + tokenise the data (``alphapo.data``), hold out an eval split, convert
   between pairs and k responses for the loss, check scores exist if needed;
3. :func:`prepare_reference`: if the loss needs reference log-probs, or ``diagnostics.reference_kl``
   asks for the ``kl/*`` metrics, read them from the on-disk cache, or load the reference model, compute
   them once, cache them and free the model (``reference.py``); reference-free losses skip this (with
   ``reference_kl`` they get the values for the metrics only: never as loss inputs);
4. :func:`load_policy` (optionally LoRA, gradient checkpointing) and :func:`prepare_optimizer`: AdamW
   (``optim.py``: fused kernel unless sharded; float32 master weights unless ``model.dtype`` asks for
   16-bit ones), warmup + cosine schedule, ``accelerator.prepare``;
5. :func:`resume_from_checkpoint` when ``resume=true`` (else the old run's files are cleared), then
   ``config.yaml`` is written;
6. :func:`training_loop`: for each optimizer step (:func:`train_step`) the global batch
   (``data.plan_epoch``) is split into length-sorted micro-batches; each micro-batch is *one* forward over
   chosen and rejected together, the prompt encoded once (``logps.group_logps``); per-example losses are summed and divided by
   the global batch size, so accumulation and data parallelism give the gradient of the global-batch
   mean; gradients are clipped, AdamW steps, the schedule steps. Every ``logging_steps``: diagnostics
   (``metrics.py``) to ``OUT/metrics.jsonl``, TensorBoard, trackers and one line on stderr
   (:func:`flush`); every ``eval_steps``: the same on the eval split (:func:`evaluate`), keeping
   ``OUT/best/`` by ``logging.best_metric``; with ``diagnostics.probe_size`` (or ``probe_path``), before
   the first step, every ``diagnostics.probe_steps`` and at the end: the fixed probe set's
   length-normalised log-likelihoods (:func:`probe`, ``probe/*`` records); every ``save_steps``: an atomic checkpoint
   (``checkpoint.py``; the engine's own under FSDP / DeepSpeed). SIGINT / SIGTERM end the current step,
   save a checkpoint and stop (:class:`TrainingInterrupted`);
7. :func:`finish`: the final model (LoRA: the adapter, and merged) with tokenizer and a model card goes
   to ``OUT/final/``.

A non-finite loss or gradient norm stops the run with :class:`NonFiniteLossError` naming the step and
the example ids; nothing is written after it, so the last checkpoint stays the last good one.

Exact resume: data order is a pure function of (seed, epoch), and a checkpoint holds parameters,
AdamW state, schedule and RNG states, so a resumed run replays the same arithmetic (bit for bit on CPU).

Deviations from TRL's DPOTrainer: the reference log-probs are always precomputed (and cached); the
learning rate logged at step ``s`` is the one used for the update of step ``s`` (TRL logs the next one).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphapo.errors import AlphapoError, UserError
from alphapo.io import clean_stale_temps
from alphapo.losses.contract import REFERENCE_INPUTS, length_normalized, loss_inputs
from alphapo.training import checkpoint as ckpt
from alphapo.training.config import (
    TrainConfig,
    resolve_accumulation,
    save_config,
    to_dict,
    validate,
    validate_loss_params,
)
from alphapo.training.data import (
    check_examples,
    is_multi,
    layout_tokens,
    load_examples,
    multi_from_pair,
    pairs_from_multi,
    plan_epoch,
    responses_of,
    split_eval,
    split_global_batch,
    steps_per_epoch,
)
from alphapo.training.logps import accepts_logits_to_keep, group_logps, runnable_layout
from alphapo.training.metrics import (
    LogpsReduction,
    MetricWindow,
    logps_reduction,
    probe_metrics,
    window_metrics,
)
from alphapo.training.optim import (
    KAHAN_NOTE,
    KahanAdamW,
    check_engine,
    check_precision,
    check_world_size,
    deepspeed_config_for_loop,
    has_accelerator_device,
    launcher_world_size,
    make_adamw,
    make_scheduler,
    precision_mismatch,
    warmup_capped_note,
    warmup_steps,
)
from alphapo.training.outputs import (
    LOCK_NAME,
    MetricsLogger,
    OutputDirLock,
    _save_pretrained_atomic,
    clear_previous_run,
    metric_line,
    model_card,
    output_dir_problem,
    save_for_inference,
    write_errors,
)


class NonFiniteLossError(AlphapoError):
    """The loss or gradient norm became NaN/inf; the message names the step and the example ids."""


class TrainingInterrupted(AlphapoError):
    """SIGINT/SIGTERM stopped the run after saving a checkpoint; the message says how to continue."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    final_dir: Path
    global_step: int
    train_metrics: dict[str, float] = field(default_factory=dict)  # the last logged train record
    eval_metrics: dict[str, float] = field(default_factory=dict)  # the last eval record
    best_metric: float | None = None
    best_step: int | None = None
    probe_metrics: dict[str, float] = field(default_factory=dict)  # the last probe record (end of training)


@dataclass
class LossSpec:
    """The loss callable, its hyper-parameters, the inputs it is given and what ``logps/*`` means for it.

    ``accepted`` holds reference inputs only when the loss needs them, so reference log-probs loaded for
    the ``kl/*`` diagnostics alone (``diagnostics.reference_kl``) never reach the loss.
    """

    fn: Any
    hparams: dict[str, Any]
    accepted: frozenset[str]
    required: frozenset[str]
    multi: bool
    need_ref: bool
    logps: LogpsReduction = "sum"


# --------------------------------------------------------------------------------------------------
# pure helpers


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



def forward_loss(model, examples: list[dict[str, Any]], *, loss_fn, hparams: dict[str, Any],
                 accepted: frozenset[str], multi: bool, ref: dict[str, torch.Tensor] | None,
                 indices: list[int], pad_id: int, trim: bool):
    """Per-example losses ``(B,)`` and detached per-example stats for one micro-batch.

    One forward over the ``B`` prompt groups (``logps.group_logps``: each prompt encoded once with its
    2 or ``k`` responses). ``ref`` holds the cached reference logps of the whole split, indexed by
    ``indices``. The third value counts ``len(prompt) + len(response)`` per response (``tokens_per_second``
    keeps its meaning whatever the layout).
    """
    groups = [ex["responses_input_ids"] if multi else [ex["chosen_input_ids"], ex["rejected_input_ids"]]
              for ex in examples]
    g = group_logps(model, [ex["prompt_input_ids"] for ex in examples], groups, pad_id, trim=trim)
    logps, lengths = g.logps, g.lengths  # (B, k); a pair is k = 2: [chosen, rejected]
    device = logps.device
    idx = torch.tensor(indices, dtype=torch.long)
    if multi:
        scores = torch.tensor([ex["scores"] for ex in examples], dtype=torch.float32, device=device)
        avail = {"logps": logps, "lengths": lengths, "scores": scores}
        if ref is not None:
            avail["ref_logps"] = ref["ref_logps"][idx].to(device)
    else:
        c_lp, r_lp = logps[:, 0], logps[:, 1]
        c_len, r_len = lengths[:, 0], lengths[:, 1]
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
    # chosen/rejected (the loss contract's convention for .chosen_rewards / .rejected_rewards); argmax /
    # argmin return the first maximum / minimum, the selection rule of alphapo.data.pairs.select_pairs
    if multi:
        best = scores.argmax(dim=1, keepdim=True)
        worst = scores.argmin(dim=1, keepdim=True)
        stats = {"chosen_logps": logps.gather(1, best)[:, 0], "rejected_logps": logps.gather(1, worst)[:, 0],
                 "chosen_lengths": lengths.gather(1, best)[:, 0],
                 "rejected_lengths": lengths.gather(1, worst)[:, 0],
                 "chosen_logit_sums": g.logit_sums.gather(1, best)[:, 0],
                 "rejected_logit_sums": g.logit_sums.gather(1, worst)[:, 0]}
        if ref is not None:
            stats["ref_chosen_logps"] = avail["ref_logps"].gather(1, best)[:, 0]
            stats["ref_rejected_logps"] = avail["ref_logps"].gather(1, worst)[:, 0]
    else:
        stats = {k_: avail[k_] for k_ in ("chosen_logps", "rejected_logps", "chosen_lengths",
                                            "rejected_lengths")}
        stats["chosen_logit_sums"], stats["rejected_logit_sums"] = g.logit_sums[:, 0], g.logit_sums[:, 1]
        if ref is not None:
            stats["ref_chosen_logps"] = avail["ref_chosen_logps"]
            stats["ref_rejected_logps"] = avail["ref_rejected_logps"]
    stats["chosen_rewards"] = out.chosen_rewards
    stats["rejected_rewards"] = out.rejected_rewards
    stats["losses"] = losses
    # token accounting per example, so that windows and processes sum them: useful = each prompt once plus
    # its responses; processed = the positions the forward ran over (padding, repeated prompts), shared evenly
    stats["useful_tokens"] = torch.tensor([len(ex["prompt_input_ids"]) + sum(len(r) for r in grp)
                                           for ex, grp in zip(examples, groups)], dtype=torch.float64)
    stats["processed_tokens"] = torch.full((len(examples),), g.processed_tokens / len(examples),
                                           dtype=torch.float64)
    stats = {k_: v.detach().cpu() if v.dtype == torch.float64 else v.detach().float().cpu()
             for k_, v in stats.items()}
    return losses, stats, g.sequence_tokens



def _gather_stats(accelerator, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if accelerator.num_processes == 1:
        return stats
    from accelerate.utils import gather_object

    gathered = gather_object([{k: v.tolist() for k, v in stats.items()}])
    keys = {k for part in gathered for k in part}  # a process with no eval examples sends {}
    return {k: torch.tensor([x for part in gathered for x in part.get(k, [])]) for k in sorted(keys)}


def batches_per_rank(n: int, *, batch_size: int, num_processes: int) -> int:
    """Forward passes every process runs over ``n`` examples dealt round-robin (process ``r`` takes
    ``r, r + P, ...``): those of the process with the most, ``ceil(ceil(n / P) / batch_size)``.

    Under FSDP / DeepSpeed ZeRO-3 every forward is a collective (the layers' weights are gathered from
    all processes), so a process that ran fewer forwards than another would leave it waiting forever.
    Example: n 5, batch 2, 2 processes -> 2 (process 0 holds 3 examples, process 1 holds 2: one real
    batch and one filler)."""
    return -(-(-(-n // num_processes)) // batch_size)


def rank_batches(mine: list[int], *, batch_size: int, n_batches: int, filler: int) -> list[tuple[list[int], bool]]:
    """This process's ``(indices, real)`` batches: ``mine`` cut into batches of ``batch_size``, then
    one-example filler batches ``([filler], False)`` up to ``n_batches`` (:func:`batches_per_rank`), whose
    results the caller discards. Every process gets exactly ``n_batches``, as :func:`train_step` keeps
    training in lockstep."""
    real = [(mine[s: s + batch_size], True) for s in range(0, len(mine), batch_size)]
    if len(real) > n_batches:
        raise ValueError(f"{len(mine)} examples in batches of {batch_size} need more than {n_batches} batches")
    return real + [([filler], False)] * (n_batches - len(real))


def _sum_across(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="sum").item())


# --------------------------------------------------------------------------------------------------
# the steps of a run


def _note(accelerator, msg: str) -> None:
    """One line on stderr from the main process."""
    if accelerator.is_main_process:
        print(f"alphapo train: {msg}", file=sys.stderr)


def resolve_loss(config: TrainConfig) -> LossSpec:
    """The loss callable of ``config.loss`` with what it accepts, requires and whether it needs a reference."""
    fn = validate_loss_params(config.loss)
    hparams = dict(config.loss.params)
    accepted, required = loss_inputs(fn, hparams)  # from the loss's declarations, never a trial call
    multi = bool(getattr(fn, "multi_response", False))
    need_ref = bool(required & REFERENCE_INPUTS)
    logps = logps_reduction(length_normalized=length_normalized(fn), uses_reference=need_ref)
    return LossSpec(fn=fn, hparams=hparams, accepted=accepted if need_ref else accepted - REFERENCE_INPUTS,
                    required=required, multi=multi, need_ref=need_ref, logps=logps)


def start_accelerator(config: TrainConfig):
    """A fresh ``Accelerator`` with ``train.mixed_precision`` (forgetting an earlier ``train()`` call's).

    Under a multi-process launcher (``WORLD_SIZE > 1``) on a machine without a GPU, accelerate would give
    every process a single-process state (it only joins the processes on CPU when ``ACCELERATE_USE_CPU``
    is set); the trainer asks for the CPU (gloo) process group itself, then checks that it sees every
    launched process (:func:`check_world_size`) and prints the world size.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # Accelerator state is a process-wide singleton: forget the precision of an earlier train() call in
    # this process (the distributed PartialState is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    launched = launcher_world_size()
    report_to = list(config.logging.report_to)
    try:
        accelerator = Accelerator(mixed_precision=config.train.mixed_precision,
                                  cpu=launched > 1 and not has_accelerator_device(), log_with=report_to or None,
                                  project_dir=str(Path(config.output_dir) / "trackers"))
    except ValueError as err:
        if "logging capability" not in str(err):
            raise
        raise UserError(f"logging.report_to={report_to}: {err}") from None
    missing = sorted(set(report_to) - {getattr(t, "value", str(t)) for t in accelerator.log_with} - {"all"})
    if missing:
        raise UserError(f"logging.report_to names {missing}, which is not installed here (accelerate would "
                        f"skip it without a word); install it (pip install {missing[0]}) or remove it")
    check_world_size(launched, accelerator.num_processes)
    check_engine(os.environ, accelerator.distributed_type.value)
    _note(accelerator, f"{accelerator.num_processes} process(es) ({accelerator.distributed_type.value}, "
                       f"device {accelerator.device})")
    mismatch = precision_mismatch(os.environ.get("ACCELERATE_MIXED_PRECISION"), config.train.mixed_precision)
    if mismatch:
        _note(accelerator, f"warning: {mismatch}")
    return accelerator


def prepare_data(config: TrainConfig, tokenizer, spec: LossSpec, accelerator):
    """(train examples, eval examples), tokenised, in the shape the loss takes (pairs or k responses)."""
    d, seed = config.data, config.train.seed
    load_kw = _load_settings(config, accelerator)
    train_ex = load_examples(d.train_path, tokenizer, split=d.split, **load_kw)
    if d.max_examples is not None:
        train_ex = train_ex[: d.max_examples]
    if d.eval_path:
        eval_ex = load_examples(d.eval_path, tokenizer, split=d.eval_split, **load_kw)
    else:
        train_ex, eval_ex = split_eval(train_ex, d.eval_fraction, seed)
    train_ex = _as_loss_input(train_ex, spec, accelerator, where=d.train_path)
    eval_ex = _as_loss_input(eval_ex, spec, accelerator, where=d.eval_path or "eval split")
    check_examples(train_ex, multi=spec.multi, required=spec.required, where=d.train_path)
    if eval_ex:
        check_examples(eval_ex, multi=spec.multi, required=spec.required, where=d.eval_path or "eval split")
    return train_ex, eval_ex


def _load_settings(config: TrainConfig, accelerator) -> dict:
    """``load_examples`` keyword arguments from ``config.data`` (the same for training, eval and probe files)."""
    d = config.data
    return dict(columns=d.columns, skip_invalid=d.skip_invalid, max_length=d.max_length,
                max_prompt_length=d.max_prompt_length, prompt_truncation=d.prompt_truncation,
                chat_template=d.chat_template, log=lambda msg: _note(accelerator, msg))


def _as_loss_input(examples: list[dict], spec: LossSpec, accelerator, *, where: str) -> list[dict]:
    """Pairs as k = 2 examples for a multi-response loss; k responses as best-vs-worst pairs for a pairwise
    one (examples whose scores all tie are dropped, with a count)."""
    if spec.multi:
        return [e if is_multi(e) else multi_from_pair(e) for e in examples]
    many = [i for i, e in enumerate(examples) if is_multi(e)]
    if not many:
        return examples
    converted = list(examples)
    for i, pair in zip(many, pairs_from_multi([examples[i] for i in many])):
        converted[i] = pair
    dropped = converted.count(None)
    if dropped:
        _note(accelerator, f"{where}: {dropped} of {len(many)} multi-response examples dropped: all their "
                           f"scores are equal, so they carry no preference")
    return [e for e in converted if e is not None]


def _load_model(name_or_path: str, config: TrainConfig):
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, config.model.dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype,
                                                    trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {name_or_path!r}: {err}") from None


def prepare_reference(config: TrainConfig, spec: LossSpec, train_ex, eval_ex, *, pad_id: int, accelerator):
    """(train, eval) reference log-probs when the loss needs them or ``diagnostics.reference_kl`` asks
    for the ``kl/*`` metrics, else (None, None)."""
    if not (spec.need_ref or config.diagnostics.reference_kl):
        return None, None
    from alphapo.training.reference import cached_reference_logps

    kw = dict(pad_id=pad_id, accelerator=accelerator, load_model=_load_model)
    train_ref = cached_reference_logps(config, train_ex, split="train", **kw)
    eval_ref = cached_reference_logps(config, eval_ex, split="eval", **kw) if eval_ex else None
    return train_ref, eval_ref


def load_policy(config: TrainConfig):
    """The policy in training mode: dropout off (unless asked), gradient checkpointing, LoRA adapters."""
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
    model.train()
    return model


@dataclass
class Schedule:
    """How long the run is: optimizer steps per epoch, in total, of warmup, and examples per step."""

    global_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup: int


def global_batch_size(config: TrainConfig, num_processes: int) -> int:
    """Examples per optimizer step: per-device batch x accumulation x processes (``ConfigError`` when
    ``train.global_batch_size`` cannot be reached with this many processes)."""
    t = config.train
    return t.per_device_batch_size * resolve_accumulation(t, num_processes) * num_processes


def plan_schedule(config: TrainConfig, n_train: int, global_batch: int) -> Schedule:
    t = config.train
    spe = steps_per_epoch(n_train, global_batch)
    total = t.epochs * spe if t.max_steps is None else t.max_steps  # max_steps overrides epochs (transformers)
    return Schedule(global_batch=global_batch, steps_per_epoch=spe, total_steps=total,
                    warmup=warmup_steps(total, t.warmup_ratio))


def is_sharded(accelerator) -> bool:
    return accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")


def prepare_optimizer(config: TrainConfig, model, accelerator, schedule: Schedule):
    """(model, optimizer, scheduler) after ``accelerator.prepare``: AdamW without weight decay on biases
    and norms, the schedule of ``train.lr_scheduler``, DeepSpeed's config adapted to the loop."""
    t = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    sharded = is_sharded(accelerator)
    optimizer = make_adamw(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        fused=not sharded, device=accelerator.device, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
        eps=t.adam_epsilon)
    if isinstance(optimizer, KahanAdamW):
        _note(accelerator, KAHAN_NOTE)
    scheduler = make_scheduler(optimizer, kind=t.lr_scheduler, total=schedule.total_steps, warmup=schedule.warmup)
    if accelerator.distributed_type.value == "DEEPSPEED":
        ds = accelerator.state.deepspeed_plugin.deepspeed_config  # edited in place: accelerate reads it
        ds.update(deepspeed_config_for_loop(ds, per_device_batch_size=t.per_device_batch_size,
                                            num_processes=accelerator.num_processes,
                                            max_grad_norm=t.max_grad_norm))
        if ds["gradient_clipping"] != (t.max_grad_norm or 0.0):
            _note(accelerator, f"DeepSpeed config gradient_clipping={ds['gradient_clipping']} differs from "
                               f"train.max_grad_norm={t.max_grad_norm}; DeepSpeed clips with its own value "
                               f"(set it to \"auto\" to use train.max_grad_norm)")
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler


@dataclass
class Run:
    """Everything the loop's steps share (built by :func:`train`; the output folder, metrics log and
    example lengths are derived from the rest)."""

    config: TrainConfig
    accelerator: Any
    spec: LossSpec
    tokenizer: Any
    trim: bool
    train_ex: list[dict]
    eval_ex: list[dict]
    train_ref: dict[str, torch.Tensor] | None
    eval_ref: dict[str, torch.Tensor] | None
    model: Any
    optimizer: Any
    scheduler: Any
    schedule: Schedule
    global_step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    window: MetricWindow = field(default_factory=lambda: MetricWindow())
    last_train: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    probe_ex: list[dict] = field(default_factory=list)  # the fixed probe set (diagnostics.probe_size)
    last_probe: dict[str, float] = field(default_factory=dict)
    bar: Any = None

    def __post_init__(self):
        self.out = Path(self.config.output_dir)
        self.pad_id = pad_token_id(self.tokenizer)
        # the batch length key: the tokens the forward's layout costs (the prompt once under prefix sharing)
        self.layout = runnable_layout(self.model, longest_row=max(
            (len(e["prompt_input_ids"]) + max(map(len, responses_of(e))) for e in self.train_ex), default=0))
        self.lengths = [layout_tokens(e, self.layout) for e in self.train_ex]
        lg = self.config.logging
        self.logger = MetricsLogger(self.out, enabled=self.accelerator.is_main_process, tensorboard=lg.tensorboard,
                                    sink=self.accelerator.log if lg.report_to else None)

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def forward(self, examples, *, ref, indices):
        s = self.spec
        return forward_loss(self.model, examples, loss_fn=s.fn, hparams=s.hparams, accepted=s.accepted,
                            multi=s.multi, ref=ref, indices=indices, pad_id=self.pad_id, trim=self.trim)


def _scaler_state(accelerator) -> dict | None:
    if accelerator.scaler is None:
        return None
    return {k: (float(v) if isinstance(v, torch.Tensor) else v)
            for k, v in accelerator.scaler.state_dict().items()}


def _without_diagnostics(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tree.items() if k != "diagnostics"}


def resume_from_checkpoint(run: Run) -> None:
    """With ``resume=true``: restore the newest intact checkpoint (refusing a changed config) and cut
    ``metrics.jsonl`` back to it; otherwise remove what an earlier run left (``overwrite=true``). Then
    write ``config.yaml``: only now, so a run that failed on its data leaves the folder as it was."""
    config, accelerator = run.config, run.accelerator
    latest = ckpt.find_latest(run.ckpt_root, log=lambda msg: _note(accelerator, msg)) if config.resume else None
    if latest is None:
        if accelerator.is_main_process:
            clear_previous_run(run.out)
            save_config(config, run.out / "config.yaml")
        accelerator.wait_for_everyone()
        return
    # diagnostics.* never change what is trained (tested bit for bit), so a resumed run may add or drop them
    # (and resume a checkpoint written before the section existed)
    changed = ckpt.resume_conflicts(_without_diagnostics(ckpt.read_trainer_state(latest).get("config", {})),
                                    _without_diagnostics(to_dict(config)))
    if changed:
        raise UserError(f"cannot resume from {latest}: the config changed in {changed}; exact resume "
                        f"needs the same data, loss, model and optimisation settings")
    # the batch plan is keyed by the layout's tokens (data.layout_tokens); checkpoints written before the key
    # was recorded were planned by the plain layout's tokens. Another key replays another plan.
    saved_key = ckpt.read_trainer_state(latest).get("batch_length_key", "plain")
    if saved_key != run.layout:
        raise UserError(f"cannot resume from {latest}: its batches were planned by the {saved_key!r} layout's "
                        f"token counts and this run plans them by the {run.layout!r} layout's, so the remaining "
                        f"batches would repeat some examples and skip others; start the run again (resume=false)")
    if ckpt.is_engine_checkpoint(latest) != engine_checkpoints(accelerator):
        raise ckpt.CheckpointError(f"cannot resume from {latest}: it was written by a "
                                   f"{'sharded' if ckpt.is_engine_checkpoint(latest) else 'non-sharded'} run "
                                   f"and this one is {'sharded' if engine_checkpoints(accelerator) else 'not'}; "
                                   f"resume with the launcher config that wrote it")
    if engine_checkpoints(accelerator):
        accelerator.load_state(str(latest))
        ckpt.load_scheduler_state(latest, run.scheduler)
        state = ckpt.read_trainer_state(latest)
    else:
        state = ckpt.load_checkpoint(latest, model=accelerator.unwrap_model(run.model), optimizer=run.optimizer,
                                     scheduler=run.scheduler, rank=accelerator.process_index)
    if state.get("scaler") and accelerator.scaler is not None:  # fp16 loss scale (plain JSON numbers)
        accelerator.scaler.load_state_dict(state["scaler"])
    run.global_step, run.best_metric, run.best_step = state["global_step"], state["best_metric"], state["best_step"]
    run.logger.truncate_after(run.global_step)
    if accelerator.is_main_process:
        save_config(config, run.out / "config.yaml")
    _note(accelerator, f"resumed from {latest} (step {run.global_step})")


def flush(run: Run, step: int) -> None:
    """Log the train metrics of the steps since the last record (gathered from every process)."""
    win, accelerator = run.window, run.accelerator
    if win.steps == 0:
        return
    stats = _gather_stats(accelerator, win.tensors())
    tokens = _sum_across(accelerator, float(win.tokens))
    rec = {"step": step, "epoch": step / run.schedule.steps_per_epoch, "split": "train",
           **window_metrics(stats, logps=run.spec.logps), "grad_norm": sum(win.grad_norms) / len(win.grad_norms),
           "learning_rate": win.lr, "tokens_per_second": tokens / max(win.seconds, 1e-9),
           "steps_per_second": win.steps / max(win.seconds, 1e-9)}
    _log(run, rec)
    run.last_train = rec
    run.bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_second']:.0f}")
    win.reset()


def _log(run: Run, rec: dict[str, Any]) -> None:
    """Write a record (metrics.jsonl, TensorBoard, trackers) and print its line (main process)."""
    run.logger.log(rec)
    if run.accelerator.is_main_process:
        from tqdm.auto import tqdm

        tqdm.write(metric_line(rec, run.schedule.total_steps), file=sys.stderr)  # above the progress bar


def evaluate(run: Run, step: int) -> dict[str, float]:
    """Metrics on the eval split (each process takes every n-th example, longest first, and runs as many
    forwards as every other: :func:`rank_batches`), logged."""
    accelerator, eval_ex = run.accelerator, run.eval_ex
    bs = run.config.train.per_device_batch_size
    run.model.eval()
    mine = list(range(accelerator.process_index, len(eval_ex), accelerator.num_processes))
    mine.sort(key=lambda i: -layout_tokens(eval_ex[i], run.layout))
    n_batches = batches_per_rank(len(eval_ex), batch_size=bs, num_processes=accelerator.num_processes)
    parts = []
    with torch.no_grad():
        for idx, real in rank_batches(mine, batch_size=bs, n_batches=n_batches, filler=0):
            _, st, _ = run.forward([eval_ex[i] for i in idx], ref=run.eval_ref, indices=idx)
            if real:  # a filler batch only keeps the processes' forwards in step
                parts.append(st)
    run.model.train()
    stats = {k: torch.cat([p[k] for p in parts]) if parts else torch.zeros(0) for k in (parts[0] if parts else {})}
    stats = _gather_stats(accelerator, stats)
    rec = {"step": step, "epoch": step / run.schedule.steps_per_epoch, "split": "eval",
           **{f"eval/{k}": v for k, v in window_metrics(stats, logps=run.spec.logps).items()}}
    _log(run, rec)
    run.last_eval = rec
    return rec


def probe_set(config: TrainConfig, train_ex: list[dict], eval_ex: list[dict], accelerator,
              tokenizer=None) -> list[dict]:
    """The fixed probe set: the first ``diagnostics.probe_size`` examples of the eval split (else of the
    training set), in their order there, so every run on the same data and seed probes the same pairs.
    With ``diagnostics.probe_path``: the first ``probe_size`` examples of that file (all when ``None``),
    tokenised with ``tokenizer`` and the ``data`` settings."""
    size, path = config.diagnostics.probe_size, config.diagnostics.probe_path
    if path is not None:
        source = load_examples(path, tokenizer, split="train", **_load_settings(config, accelerator))
        if not source:
            raise UserError(f"diagnostics.probe_path={path!r} holds no pairs")
        size, where = (len(source) if size is None else size), path
    elif size is None:
        return []
    else:
        source, where = (eval_ex, "eval split") if eval_ex else (train_ex, "training set")
    if len(source) < size:
        _note(accelerator, f"diagnostics.probe_size={size} but the {where} has {len(source)} examples; "
                           f"probing all {len(source)}")
    return source[:size]


def probe_pairs(examples: list[dict]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """(prompts, chosen, rejected) token ids of probe examples; for k responses the best- and worst-scored
    ones (the first maximum / minimum, as the trainer's per-example stats)."""
    prompts, chosen, rejected = [], [], []
    for ex in examples:
        prompts.append(ex["prompt_input_ids"])
        if is_multi(ex):
            scores = ex["scores"]
            chosen.append(ex["responses_input_ids"][scores.index(max(scores))])
            rejected.append(ex["responses_input_ids"][scores.index(min(scores))])
        else:
            chosen.append(ex["chosen_input_ids"])
            rejected.append(ex["rejected_input_ids"])
    return prompts, chosen, rejected


def probe(run: Run, step: int) -> dict[str, float]:
    """Log the ``probe/*`` metrics (``metrics.probe_metrics``) of the policy after ``step`` optimizer
    steps on the fixed probe set: eval mode (no dropout), no gradients, the model back in training mode
    afterwards. Nothing random is drawn, so training is the same with and without probes."""
    accelerator, bs = run.accelerator, run.config.train.per_device_batch_size
    mine = list(range(accelerator.process_index, len(run.probe_ex), accelerator.num_processes))
    keys = ("chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    n_batches = batches_per_rank(len(run.probe_ex), batch_size=bs, num_processes=accelerator.num_processes)
    run.model.eval()
    try:
        with torch.no_grad():
            for idx, real in rank_batches(mine, batch_size=bs, n_batches=n_batches, filler=0):
                prompts, chosen, rejected = probe_pairs([run.probe_ex[i] for i in idx])
                g = group_logps(run.model, prompts, [list(cr) for cr in zip(chosen, rejected)], run.pad_id,
                                trim=run.trim)
                if not real:  # a filler batch only keeps the processes' forwards in step
                    continue
                logps, lengths = g.logps, g.lengths
                for key, value in zip(keys, (logps[:, 0], logps[:, 1], lengths[:, 0], lengths[:, 1])):
                    parts[key].append(value.detach().float().cpu())
    finally:
        run.model.train()
    stats = _gather_stats(accelerator, {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()})
    rec = {"step": step, "epoch": step / run.schedule.steps_per_epoch, "split": "probe",
           "probe/size": len(run.probe_ex), **probe_metrics(**stats)}
    _log(run, rec)
    run.last_probe = rec
    return rec


def probe_interval(config: TrainConfig) -> int:
    """Optimizer steps between probe passes: ``diagnostics.probe_steps``, else ``logging.logging_steps``."""
    return config.diagnostics.probe_steps or config.logging.logging_steps


def keep_best(run: Run, step: int, rec: dict[str, float]) -> None:
    """Save ``OUT/best/`` when ``rec`` improves ``logging.best_metric``."""
    lg, accelerator = run.config.logging, run.accelerator
    value = rec.get(lg.best_metric)
    if value is None:
        raise UserError(f"logging.best_metric={lg.best_metric!r} is not an eval metric; e.g. "
                        f"'eval/loss', 'eval/rewards/accuracies'")
    best = run.best_metric
    if not (best is None or (value < best if lg.best_mode == "min" else value > best)):
        return
    run.best_metric, run.best_step = value, step
    full_state = accelerator.get_state_dict(run.model) if is_sharded(accelerator) else None
    if accelerator.is_main_process:
        with write_errors(run.out / "best"):
            save_for_inference(accelerator.unwrap_model(run.model), run.tokenizer, run.out / "best",
                                state_dict=full_state)
        ckpt.atomic_write_text(run.out / "best" / "best.json",
                               json.dumps({"step": step, lg.best_metric: value}) + "\n")


def engine_checkpoints(accelerator) -> bool:
    """Whether checkpoints are the engine's own (``accelerator.save_state``): under FSDP / DeepSpeed."""
    return is_sharded(accelerator)


def _trainer_state(run: Run, step: int) -> dict[str, Any]:
    return {"global_step": step, "best_metric": run.best_metric, "best_step": run.best_step,
            "config": to_dict(run.config), "scaler": _scaler_state(run.accelerator),
            "batch_length_key": run.layout}


def save_engine_checkpoint(run: Run, step: int) -> None:
    """A sharded checkpoint: every process writes its shards with ``accelerator.save_state`` into one
    temporary folder (``output_dir`` must be on a file system all processes share), then the main process
    commits it (``checkpoint.commit_engine_checkpoint``)."""
    accelerator = run.accelerator
    tmp = ckpt.engine_temp_dir(run.ckpt_root, step)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with write_errors(run.ckpt_root):
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with write_errors(run.ckpt_root):
            ckpt.commit_engine_checkpoint(run.ckpt_root, step, scheduler=run.scheduler,
                                          trainer_state=_trainer_state(run, step),
                                          keep=run.config.logging.save_total_limit)
    accelerator.wait_for_everyone()


def save_checkpoint(run: Run, step: int) -> None:
    """Flush the metrics, then write a resumable checkpoint of step ``step`` (main process; every process
    under FSDP / DeepSpeed)."""
    flush(run, step)
    accelerator = run.accelerator
    if engine_checkpoints(accelerator):
        save_engine_checkpoint(run, step)
        return
    rng_by_rank = [ckpt.rng_state()]
    if accelerator.num_processes > 1:  # every rank's random stream (a collective)
        from accelerate.utils import gather_object

        rng_by_rank = gather_object(rng_by_rank)
    if accelerator.is_main_process:
        state = _trainer_state(run, step)
        with write_errors(run.ckpt_root):
            ckpt.save_checkpoint(run.ckpt_root, step, model=accelerator.unwrap_model(run.model),
                                 optimizer=run.optimizer, scheduler=run.scheduler,
                                 keep=run.config.logging.save_total_limit, trainer_state=state,
                                 rng_by_rank=rng_by_rank)
    accelerator.wait_for_everyone()


def train_step(run: Run, batch: list[int], step: int, epoch: int) -> None:
    """One optimizer step on the global batch ``batch`` (example indices); ``step`` steps are done."""
    accelerator, t, win = run.accelerator, run.config.train, run.window
    t0 = time.perf_counter()
    micro = split_global_batch(batch, run.lengths, micro_batch=t.per_device_batch_size,
                               process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    weight = accelerator.num_processes / len(batch)  # -> gradient of the global-batch mean
    if not micro:  # a short final batch left this process nothing: stay in DDP lockstep
        micro, weight = [batch[:1]], 0.0
    bad_ids: list[str] = []
    win.lr = run.optimizer.param_groups[0]["lr"]
    for j, mb in enumerate(micro):
        sync = j == len(micro) - 1
        ctx = contextlib.nullcontext() if sync else accelerator.no_sync(run.model)
        # tell accelerate which micro-batch ends the step: under DeepSpeed, backward() runs
        # engine.step() at that boundary only (the DS config's own accumulation must be 1)
        accelerator.gradient_state._set_sync_gradients(sync)
        with ctx:
            losses, stats, ntok = run.forward([run.train_ex[i] for i in mb], ref=run.train_ref, indices=mb)
            finite = torch.isfinite(losses.detach())
            if not bool(finite.all()):
                bad_ids += [run.train_ex[i]["id"] for i, ok in zip(mb, finite.tolist()) if not ok]
            accelerator.backward(losses.sum() * weight)
        if weight > 0:
            win.add(stats)
            win.tokens += ntok
    if _sum_across(accelerator, float(len(bad_ids))):
        raise NonFiniteLossError(
            f"non-finite loss at optimizer step {step + 1} (epoch {epoch}); example id(s) "
            f"{bad_ids[:20] or '(on another process)'}; the last good checkpoint is kept in "
            f"{run.ckpt_root}; lower the learning rate or check these examples")
    max_norm = t.max_grad_norm if t.max_grad_norm is not None else float("inf")
    norm = accelerator.clip_grad_norm_(run.model.parameters(), max_norm)
    grad_norm = float(norm) if norm is not None else float("nan")  # DeepSpeed may not report
    # under fp16 loss scaling an overflow is routine: the scaler skips the step and lowers
    # the scale, so only an unscaled run treats a non-finite gradient norm as fatal
    if norm is not None and not math.isfinite(grad_norm) and accelerator.scaler is None:
        raise NonFiniteLossError(
            f"non-finite gradient norm at optimizer step {step + 1} (epoch {epoch}); batch "
            f"example ids {[run.train_ex[i]['id'] for i in batch][:20]}; the last good checkpoint "
            f"is kept in {run.ckpt_root}")
    run.optimizer.step()
    if not accelerator.optimizer_step_was_skipped:
        run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    win.grad_norms.append(grad_norm)
    win.steps += 1
    win.seconds += time.perf_counter() - t0


class StopSignals:
    """SIGINT / SIGTERM during the loop are remembered and acted on at the end of the current optimizer
    step (a cluster pre-empts with SIGTERM); a second signal gets the default behaviour at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal.signal works there only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _stop_reason(run: Run, stop: StopSignals) -> str | None:
    """The signal that asks every process to stop after this step (agreed on by all of them)."""
    reason = stop.received
    if run.accelerator.num_processes > 1 and _sum_across(run.accelerator, float(reason is not None)):
        reason = reason or "a signal to another process"
    return reason


def stop_with_checkpoint(run: Run, step: int, reason: str) -> None:
    """Save a checkpoint of step ``step`` (unless the periodic save just did) and stop the run."""
    lg = run.config.logging
    if not (lg.save_steps and step % lg.save_steps == 0):
        save_checkpoint(run, step)
    raise TrainingInterrupted(f"stopped by {reason} after optimizer step {step} of {run.schedule.total_steps}; "
                              f"checkpoint saved in {run.ckpt_root / f'step-{step:06d}'}; continue with "
                              f"resume=true")


def training_loop(run: Run) -> int:
    """Train from ``run.global_step`` to the schedule's total (:func:`run_steps`), then write the last log
    record and run the final evaluation; trackers, progress bar and log are opened and closed here.
    Returns the last step."""
    from tqdm.auto import tqdm

    config, accelerator = run.config, run.accelerator
    start_trackers(run)
    run.bar = tqdm(total=run.schedule.total_steps, initial=run.global_step, desc=f"train {config.loss.name}",
                   disable=not (config.logging.progress_bar and accelerator.is_main_process), dynamic_ncols=True)
    try:
        if run.probe_ex and run.global_step == 0:
            probe(run, 0)  # the curve starts at the initial policy
        with StopSignals() as stop:
            step = run_steps(run, stop)
        flush(run, step)
        if run.eval_ex:
            keep_best(run, step, evaluate(run, step))
        if run.probe_ex and run.last_probe.get("step") != step:
            probe(run, step)  # the end of training (AlphaPO Figure 13's margin quartiles)
    finally:
        run.bar.close()
        run.logger.close()
        if config.logging.report_to:
            accelerator.end_training()
    return step


def run_steps(run: Run, stop: StopSignals) -> int:
    """Optimizer steps with the periodic log, eval and save, stopping with a checkpoint on SIGINT/SIGTERM."""
    lg, sched, d = run.config.logging, run.schedule, run.config.data
    step = run.global_step
    while step < sched.total_steps:
        epoch, in_epoch = divmod(step, sched.steps_per_epoch)
        plan = plan_epoch(run.lengths, global_batch=sched.global_batch, seed=run.config.train.seed,
                          epoch=epoch, group_by_length=d.group_by_length)
        for batch in plan[in_epoch:]:
            if step >= sched.total_steps:
                break
            train_step(run, batch, step, epoch)
            step += 1
            run.global_step = step
            run.bar.update(1)
            if step % lg.logging_steps == 0:
                flush(run, step)
            if run.eval_ex and lg.eval_steps and step % lg.eval_steps == 0 and step < sched.total_steps:
                keep_best(run, step, evaluate(run, step))
            if run.probe_ex and step % probe_interval(run.config) == 0:
                probe(run, step)
            if lg.save_steps and step % lg.save_steps == 0 and step < sched.total_steps:
                save_checkpoint(run, step)
            reason = _stop_reason(run, stop) if step < sched.total_steps else None
            if reason:
                stop_with_checkpoint(run, step, reason)
    return step


def finish(run: Run, step: int) -> TrainResult:
    """Write ``OUT/final/`` (gathered weights under FSDP/DeepSpeed) with a model card; LoRA runs write the
    adapter (peft format) to ``OUT/adapter/`` and, with ``model.lora.merge``, the merged model to final/."""
    accelerator, config = run.accelerator, run.config
    final = run.out / "final"
    final_model = accelerator.unwrap_model(run.model)
    full_state = None
    card = model_card(config, step=step, train_metrics=run.last_train, eval_metrics=run.last_eval,
                      probe_metrics=run.last_probe)
    if config.model.lora.enabled:
        if accelerator.is_main_process:
            with write_errors(run.out / "adapter", kept="no adapter was written"):
                _save_pretrained_atomic(final_model, run.tokenizer, run.out / "adapter", card=card)
        if config.model.lora.merge:
            final_model = final_model.merge_and_unload()
        else:
            final = run.out / "adapter"
    elif is_sharded(accelerator):
        full_state = accelerator.get_state_dict(run.model)  # a collective: every process calls it
    if accelerator.is_main_process and final.name == "final":
        with write_errors(final, kept="no final model was written (an earlier final/ is kept)"):
            save_for_inference(final_model, run.tokenizer, final, card=card, state_dict=full_state)
    accelerator.wait_for_everyone()
    return TrainResult(output_dir=run.out, final_dir=final, global_step=step, train_metrics=run.last_train,
                       eval_metrics=run.last_eval, best_metric=run.best_metric, best_step=run.best_step,
                       probe_metrics=run.last_probe)


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` with ``config.loss`` on ``config.data``; see the module docstring."""
    from accelerate.utils import set_seed
    from transformers.utils import logging as hf_logging

    validate(config)
    hf_logging.disable_progress_bar()  # "Loading weights"/"Writing shards" bars would bury ours
    spec = resolve_loss(config)
    accelerator = start_accelerator(config)
    global_batch = global_batch_size(config, accelerator.num_processes)
    check_precision(weights_dtype=config.model.dtype, mixed_precision=config.train.mixed_precision,
                    sharded=is_sharded(accelerator))
    with locked_output_dir(config, accelerator):
        set_seed(config.train.seed)
        tokenizer = load_tokenizer(config)
        train_ex, eval_ex = prepare_data(config, tokenizer, spec, accelerator)
        train_ref, eval_ref = prepare_reference(config, spec, train_ex, eval_ex, pad_id=pad_token_id(tokenizer),
                                                accelerator=accelerator)
        model = load_policy(config)
        schedule = plan_schedule(config, len(train_ex), global_batch)
        capped = warmup_capped_note(schedule.total_steps, config.train.warmup_ratio)
        if capped:
            _note(accelerator, capped)
        trim = accepts_logits_to_keep(model)
        model, optimizer, scheduler = prepare_optimizer(config, model, accelerator, schedule)
        run = Run(config=config, accelerator=accelerator, spec=spec, tokenizer=tokenizer, trim=trim,
                  train_ex=train_ex, eval_ex=eval_ex, train_ref=train_ref, eval_ref=eval_ref, model=model,
                  optimizer=optimizer, scheduler=scheduler, schedule=schedule,
                  probe_ex=probe_set(config, train_ex, eval_ex, accelerator, tokenizer))
        resume_from_checkpoint(run)
        step = training_loop(run)
        return finish(run, step)


def load_tokenizer(config: TrainConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)


def pad_token_id(tokenizer) -> int:
    """The pad token, or EOS for tokenizers without one (padding is masked out either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _from_main(accelerator, value):
    """``value`` as computed on the main process, on every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


@contextlib.contextmanager
def locked_output_dir(config: TrainConfig, accelerator):
    """Create and lock ``output_dir`` for the run (main process), recover a save killed midway, and
    refuse a folder holding a run unless ``resume`` / ``overwrite`` says what to do with it (every
    process raises); the lock is released when the run ends, however it ends."""
    lock = OutputDirLock(Path(config.output_dir))
    problem = _claim_output_dir(config, lock, accelerator) if accelerator.is_main_process else None
    problem = _from_main(accelerator, problem)
    try:
        if problem:
            raise UserError(problem)
        yield
    finally:
        lock.release()


def _claim_output_dir(config: TrainConfig, lock: OutputDirLock, accelerator) -> str | None:
    """The main process's part of :func:`locked_output_dir`: why the run may not start, or None."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        return f"cannot use output_dir {str(out)!r}: it is a file, not a folder; choose another output_dir"
    try:
        out.mkdir(parents=True, exist_ok=True)
        holder = lock.acquire()
    except OSError as err:
        return f"cannot use output_dir {str(out)!r}: {err.strerror or err}; choose a writable folder"
    if holder is not None:
        return (f"output_dir {str(out)!r} is in use by another alphapo train ({holder}, lock "
                f"{out / LOCK_NAME}); wait for it to finish or choose another output_dir")
    if lock.unlocked_reason:
        _note(accelerator, lock.unlocked_reason)
    tidied = clean_stale_temps(out)  # a save or a clean-up killed midway (alphapo.io's recovery)
    if tidied:
        _note(accelerator, f"recovered {out} from a write killed midway ({', '.join(tidied)})")
    has_checkpoint = (out / "checkpoints").is_dir() and any(
        ckpt.STEP_DIR.match(p.name) for p in (out / "checkpoints").iterdir())
    return output_dir_problem(out, resume=config.resume, overwrite=config.overwrite, has_checkpoint=has_checkpoint)


def start_trackers(run: Run) -> None:
    """``accelerator.init_trackers`` for ``logging.report_to`` (files under ``OUT/trackers/``), with the
    scalar config values as the run's hyper-parameters."""
    if not run.config.logging.report_to:
        return
    hparams = {k: v for k, v in ckpt._flatten(to_dict(run.config)).items()
               if isinstance(v, (int, float, str, bool))}
    run.accelerator.init_trackers(run.out.name or "alphapo", config=hparams)
