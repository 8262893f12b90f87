"""The training configuration: one dataclass tree, the single source for YAML, ``key=value`` and Python.

A run is described by :class:`TrainConfig`. The same tree is filled from a YAML file
(:func:`load_config`), patched by dotted command-line overrides (``train.learning_rate=1e-6``,
``loss.beta=2.5``) and written back, fully resolved, to ``OUT/config.yaml`` (:func:`save_config`).
Python users build it directly: ``TrainConfig(model=ModelConfig("path"), data=DataConfig("pairs.jsonl"),
loss=LossConfig("alphapo", {"beta": 2.5, "gamma": 0.25, "alpha": 0.25}), output_dir="out")``.

Unknown or misspelled keys are errors naming the key and the nearest valid one (``difflib``); nothing is
silently dropped. Values are coerced to the field's declared type, so YAML's ``1e-6`` (a *string* for
PyYAML) becomes the float it means.

The loss section is special: ``loss.name`` picks a callable from ``alphapo.losses.LOSSES`` and every
other key under ``loss`` is a hyper-parameter checked against that callable's keyword-only signature
(:func:`validate_loss_params`), again with nearest-name suggestions.

Defaults follow the AlphaPO / SimPO recipes (AlphaPO appendix A.6): one epoch, cosine schedule, warmup
ratio 0.1, AdamW, and a global batch size reached through gradient accumulation
(``train.global_batch_size`` = per-device batch x accumulation x processes).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alphapo.errors import UserError

# Keyword names of the loss contract that are tensors computed by the trainer, not hyper-parameters.
LOSS_TENSOR_INPUTS = frozenset({
    "chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths",
    "ref_chosen_logps", "ref_rejected_logps", "chosen_scores", "rejected_scores", "chosen_nll",
    "logps", "lengths", "scores", "ref_logps",
})


class ConfigError(UserError):
    """A config key or value the user must fix."""


@dataclass
class LoraConfig:
    """LoRA adapters through ``peft`` (off by default), saved as an adapter and (by default) merged."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None  # None: peft's default for the architecture
    # OUT/adapter/ always holds the adapter (peft format); merge=true also writes OUT/final/ with the
    # adapter merged into the base weights (a plain transformers model)
    merge: bool = True


@dataclass
class ModelConfig:
    """The policy model and how it is loaded."""

    name_or_path: str = ""
    trust_remote_code: bool = False  # off unless the config asks for it
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # storage dtype of the weights
    gradient_checkpointing: bool = False
    disable_dropout: bool = True  # as TRL's DPO/CPO trainers: dropout p = 0 (LoRA dropout excepted)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    """Preference data: read by ``alphapo.data.load_preferences``, tokenised by ``tokenize_preferences``."""

    train_path: str = ""
    eval_path: str | None = None
    eval_fraction: float = 0.0  # held out from train_path when eval_path is not given
    split: str = "train"
    eval_split: str = "train"
    columns: dict[str, str] | None = None
    skip_invalid: bool = False
    max_length: int | None = 1024
    max_prompt_length: int | None = None
    prompt_truncation: str = "keep_end"
    max_examples: int | None = None  # keep the first N training records (quick experiments)
    group_by_length: bool = True


@dataclass
class LossConfig:
    """``name`` from ``alphapo.losses.LOSSES``; ``params`` are its hyper-parameters (beta, gamma, ...).

    In YAML and on the command line the hyper-parameters sit next to the name: ``loss.beta=2.5``.
    """

    name: str = "alphapo"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReferenceConfig:
    """The reference model, used only when the loss requires reference log-probs."""

    name_or_path: str | None = None  # None: the initial policy (model.name_or_path)
    cache_dir: str | None = None  # None: $ALPHAPO_CACHE/reference or ~/.cache/alphapo/reference
    use_cache: bool = True
    batch_size: int = 8


@dataclass
class OptimConfig:
    """Optimisation: AdamW, cosine schedule with warmup, gradient accumulation, clipping, precision."""

    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; stops early when reached
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int | None = None  # None: derived from global_batch_size
    global_batch_size: int | None = None  # None: per_device_batch_size x accumulation x processes
    learning_rate: float = 1e-6
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0  # None: no clipping (grad_norm is still logged)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 42


@dataclass
class LoggingConfig:
    """What is logged, evaluated and saved, and how often (in optimizer steps)."""

    logging_steps: int = 1
    eval_steps: int | None = None  # None: evaluate at the end only (when an eval split exists)
    save_steps: int | None = None  # None: no intermediate checkpoints
    save_total_limit: int = 2  # checkpoints kept (the newest ones); "best" is kept apart
    best_metric: str = "eval/loss"
    best_mode: Literal["min", "max"] = "min"
    tensorboard: bool = True
    progress_bar: bool = True
    # accelerate trackers fed with every record, e.g. [tensorboard] or [wandb] (installed and configured
    # separately); their files go to OUT/trackers/
    report_to: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """A complete training run. ``output_dir`` receives config.yaml, metrics.jsonl, checkpoints, final/."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output_dir: str = "runs/alphapo"
    resume: bool = False  # continue from OUT/checkpoints/latest when it exists
    # start again in an output_dir that holds a run (final/ or checkpoints), replacing it; without it
    # (or resume) such a folder is refused; the old run is removed only once the new one's data loaded
    overwrite: bool = False


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls=TrainConfig, prefix: str = "") -> list[str]:
    """All dotted keys of the tree (loss hyper-parameters excluded: they depend on the loss)."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(valid_keys(hint, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def _suggest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(candidates))}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the declared type ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be None")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover - programming error


def _loss_from_dict(raw: Any, key: str) -> LossConfig:
    if isinstance(raw, LossConfig):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping with 'name' and hyper-parameters, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("name", LossConfig.name)
    params = dict(raw.pop("params", {}) or {})
    params.update(raw)  # flat form: loss: {name: alphapo, beta: 2.5}
    return LossConfig(name=str(name), params={k: _parse_scalar(v) for k, v in params.items()})


def _parse_scalar(value: Any) -> Any:
    """YAML-ish scalar parsing for untyped loss hyper-parameters ('1e-3' -> 0.001, 'true' -> True)."""
    if not isinstance(value, str):
        return value
    import yaml

    parsed = yaml.safe_load(value) if value.strip() else value
    if isinstance(parsed, str):
        try:
            return float(parsed)
        except ValueError:
            return parsed
    return parsed


def from_dict(raw: dict[str, Any], cls=TrainConfig, prefix: str = ""):
    """Build a dataclass from a nested dict, rejecting unknown keys with a suggestion."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = prefix + str(key)
        if key not in names:
            candidates = [prefix + n for n in names] + (valid_keys(TrainConfig) if prefix == "" else [])
            raise ConfigError(f"unknown config key {full!r}{_suggest(full, candidates)}")
        hint = hints[key]
        if hint is LossConfig:
            kwargs[key] = _loss_from_dict(value, full)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = value if isinstance(value, hint) else from_dict(value or {}, hint, full + ".")
        else:
            kwargs[key] = _coerce(value, hint, full)
    return cls(**kwargs)


def to_dict(config) -> dict[str, Any]:
    """The nested dict form (loss hyper-parameters flattened next to ``name``), YAML-ready."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, LossConfig):
            out[f.name] = {"name": value.name, **value.params}
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = value
    return out


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (dotted keys, e.g. ``train.learning_rate=1e-6``, ``loss.beta=2``)."""
    raw = to_dict(config)
    keys = valid_keys(TrainConfig)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.learning_rate=1e-6)")
        key, value = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if parts[0] == "loss" and len(parts) == 2:
            raw["loss"][parts[1]] = _parse_scalar(value)
            continue
        if key not in keys:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, keys)}")
        node = raw
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value  # coerced to the field type by from_dict
    return from_dict(raw)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: invalid YAML: {err}") from None
    config = from_dict(raw)
    if overrides:
        config = apply_overrides(config, overrides)
    return config


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    import yaml

    from alphapo.training.checkpoint import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


# --------------------------------------------------------------------------------------------------
# validation against the loss registry


def loss_hyperparameters(loss_fn) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a loss callable that are hyper-parameters (not trainer tensors)."""
    sig = inspect.signature(loss_fn)
    return {name: p for name, p in sig.parameters.items()
            if name not in LOSS_TENSOR_INPUTS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def validate_loss_params(loss: LossConfig):
    """Return the loss callable after checking its name and hyper-parameters; raise ConfigError."""
    from alphapo import losses as losses_mod

    registry = getattr(losses_mod, "LOSSES", None)
    if not registry:
        raise ConfigError("alphapo.losses.LOSSES is empty or missing: no loss is available")
    if loss.name not in registry:
        raise ConfigError(f"unknown loss {loss.name!r}{_suggest(loss.name, list(registry))}")
    fn = losses_mod.get_loss(loss.name)
    params = loss_hyperparameters(fn)
    for key in loss.params:
        if key not in params:
            raise ConfigError(f"loss {loss.name!r} has no hyper-parameter {key!r}"
                              f"{_suggest(key, list(params))}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in loss.params]
    if missing:
        raise ConfigError(f"loss {loss.name!r} needs hyper-parameter(s) {missing}: set loss.{missing[0]}=...")
    return fn


def validate(config: TrainConfig) -> None:
    """Cross-field checks that do not need the model or data."""
    if not config.model.name_or_path:
        raise ConfigError("model.name_or_path is required (a local folder or hub id)")
    if not config.data.train_path:
        raise ConfigError("data.train_path is required (a JSONL/JSON/Parquet file or dataset folder)")
    t = config.train
    if t.per_device_batch_size < 1:
        raise ConfigError("train.per_device_batch_size must be >= 1")
    if t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps < 1:
        raise ConfigError("train.gradient_accumulation_steps must be >= 1")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError("train.warmup_ratio must be in [0, 1)")
    if not 0.0 <= config.data.eval_fraction < 1.0:
        raise ConfigError("data.eval_fraction must be in [0, 1)")
    if config.logging.logging_steps < 1:
        raise ConfigError("logging.logging_steps must be >= 1")
    validate_loss_params(config.loss)


def resolve_accumulation(t: OptimConfig, num_processes: int) -> int:
    """Gradient accumulation steps reaching ``global_batch_size`` with ``num_processes`` processes."""
    per_step = t.per_device_batch_size * num_processes
    if t.global_batch_size is None:
        return t.gradient_accumulation_steps or 1
    if t.global_batch_size % per_step:
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} is not a multiple of "
                          f"per_device_batch_size x processes = {per_step}")
    accum = t.global_batch_size // per_step
    if t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps != accum:
        raise ConfigError(f"train.gradient_accumulation_steps={t.gradient_accumulation_steps} contradicts "
                          f"global_batch_size={t.global_batch_size} (needs {accum}); set only one")
    return accum
