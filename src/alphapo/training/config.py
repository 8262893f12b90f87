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
and the range the loss documents (:func:`validate_loss_params`, ``alphapo.losses.contract``), again with
nearest-name suggestions. ``loss.KEY=null`` removes a key (the loss's default applies); ``loss.name=OTHER``
on the command line drops the hyper-parameters the file set for its loss, with a note.

Validation, in one place and before any model or data is loaded (:func:`validate`, one-line
``ConfigError`` s that the command line turns into exit code 2):

- :func:`check_ranges`: every numeric field against its documented range, the table ``FIELD_RANGES``
  (e.g. ``train.max_grad_norm`` in ``(0, inf)``: a negative one would be gradient ascent);
- :func:`resolve_config`: the ranges and the loss; it fills ``loss`` with every hyper-parameter and the
  value used, defaults included, so config.yaml and the model card show what ran;
- :func:`check_model_path` / :func:`check_output_dir`: a model folder that exists and holds config.json,
  or a string shaped like a hub id (a missing local path is "no such file", never a hub lookup), and an
  ``output_dir`` that is a folder this process can write in.

Defaults follow the AlphaPO / SimPO recipes (AlphaPO appendix A.6): one epoch, cosine schedule, warmup
ratio 0.1, AdamW, and a global batch size reached through gradient accumulation
(``train.global_batch_size`` = per-device batch x accumulation x processes).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import sys
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from alphapo.errors import UserError


def __getattr__(name: str) -> Any:
    # ``LOSS_TENSOR_INPUTS`` lives in ``alphapo.losses.contract``; resolved lazily so that importing the
    # config (the CLI's --help, --print-config) does not import torch.
    if name == "LOSS_TENSOR_INPUTS":
        from alphapo.losses.contract import LOSS_TENSOR_INPUTS

        return LOSS_TENSOR_INPUTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    # auto: conversational prompts get the tokenizer's chat template, plain strings are used as they are
    # (TRL's rule); always: strings are wrapped as a user turn too; never: no template at all
    chat_template: Literal["auto", "always", "never"] = "auto"


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
    # optimizer steps; when set it overrides epochs (as transformers' max_steps > 0 overrides
    # num_train_epochs): the loop passes over the data as many times as it needs, reshuffled each pass
    max_steps: int | None = None
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
class DiagnosticsConfig:
    """Diagnostics beyond the per-batch metrics (they never change what is trained).

    ``reference_kl``: compute reference log-probs for the ``kl/*`` metrics even when the loss does not use
    them (SimPO, AlphaPO; AlphaPO Figures 10-11); they come from the cached reference pass and are never
    given to the loss. ``probe_size``: a fixed probe set of that many pairs (the first ones of the eval
    split, else of the training set) whose length-normalised log-likelihoods are logged every
    ``probe_steps`` optimizer steps (``None``: every ``logging.logging_steps``) as ``probe/*`` records
    (AlphaPO Figure 2), and at the end of training (Figure 13's margin quartiles). ``probe_path``: take the
    probe set from this preference file instead (read like ``data.train_path``, same tokenisation
    settings): its first ``probe_size`` pairs, or all of them when ``probe_size`` is ``None``; e.g. the
    high-scoring rejected responses whose unlearning the reward-augmented data paper plots (Figure 3).
    """

    reference_kl: bool = False
    probe_size: int | None = None  # None: no probe set (with probe_path: all of its pairs)
    probe_steps: int | None = None  # None: every logging.logging_steps
    probe_path: str | None = None  # None: the probe set comes from the eval split, else the training set


@dataclass
class TrainConfig:
    """A complete training run. ``output_dir`` receives config.yaml, metrics.jsonl, checkpoints, final/."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
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
    if origin in (typing.Union, types.UnionType):
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
    parsed = {k: _parse_scalar(v) for k, v in params.items()}
    return LossConfig(name=str(name), params={k: v for k, v in parsed.items() if v is not None})  # null: default


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


def _stderr_note(message: str) -> None:
    print(f"alphapo: {message}", file=sys.stderr)


def apply_overrides(config: TrainConfig, overrides: list[str], *,
                    log: Callable[[str], None] = _stderr_note) -> TrainConfig:
    """Apply ``key=value`` overrides (dotted keys, e.g. ``train.learning_rate=1e-6``, ``loss.beta=2``).

    ``loss.KEY=null`` removes a loss hyper-parameter (its default applies). ``loss.name=OTHER`` switches
    the loss: the hyper-parameters the config set for the previous loss are dropped (they were chosen for
    it, and may not even exist for the new one), ``log`` says which, and ``loss.KEY=VALUE`` overrides
    given with the switch apply to the new loss.
    """
    raw = to_dict(config)
    keys = valid_keys(TrainConfig)
    parsed: list[tuple[str, str]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.learning_rate=1e-6)")
        key, value = item.split("=", 1)
        parsed.append((key.strip(), value))
    names = [_parse_scalar(value) for key, value in parsed if key == "loss.name"]
    if names and str(names[-1]) != config.loss.name and config.loss.params:
        dropped = ", ".join(f"{k}={v}" for k, v in config.loss.params.items())
        raw["loss"] = {"name": config.loss.name}
        log(f"loss.name={names[-1]} replaces loss {config.loss.name!r}; its hyper-parameters from the config "
            f"({dropped}) are dropped (set loss.KEY=VALUE to keep any)")
    for key, value in parsed:
        parts = key.split(".")
        if parts[0] == "loss" and len(parts) == 2:
            scalar = _parse_scalar(value)
            if scalar is None and parts[1] != "name":
                raw["loss"].pop(parts[1], None)  # loss.KEY=null: back to the loss's default
            else:
                raw["loss"][parts[1]] = scalar
            continue
        if key not in keys:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, keys)}")
        node = raw
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value  # coerced to the field type by from_dict
    return from_dict(raw)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None, *,
                log: Callable[[str], None] = _stderr_note) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides.

    Nothing is validated beyond keys and types: ``resolve_config`` / ``validate`` do that.
    """
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
        config = apply_overrides(config, overrides, log=log)
    return config


LAUNCH_KEYS = ("resume", "overwrite")
"""Top-level keys that say how one launch starts, not what the run is: never written by ``save_config``."""


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the config as YAML, atomically (temp file + rename).

    ``LAUNCH_KEYS`` (``resume``) are left out: they say how this launch started, not what the run is, so
    training from the saved file later does not silently resume. Call ``validate`` first so that the loss's defaults are
    written out too.
    """
    import yaml

    from alphapo.training.checkpoint import atomic_write_text

    tree = to_dict(config)
    for key in LAUNCH_KEYS:
        tree.pop(key, None)
    atomic_write_text(Path(path), yaml.safe_dump(tree, sort_keys=False))


# --------------------------------------------------------------------------------------------------
# validation against the loss registry


def loss_hyperparameters(loss_fn) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a loss callable that are hyper-parameters (not trainer tensors)."""
    from alphapo.losses.contract import hyperparameters

    return hyperparameters(loss_fn)


def validate_loss_params(loss: LossConfig):
    """Return the loss callable after checking its name and hyper-parameters; raise ConfigError.

    Hyper-parameters are checked by the loss contract (``alphapo.losses.contract``): known names, numbers
    where numbers are expected, and the range each loss documents (``loss.ranges``).
    """
    return _resolved_loss(loss)[0]


def _resolved_loss(loss: LossConfig):
    from alphapo import losses as losses_mod
    from alphapo.losses.contract import resolve_hyperparameters

    registry = losses_mod.LOSSES
    if loss.name not in registry:
        raise ConfigError(f"unknown loss {loss.name!r}{_suggest(loss.name, list(registry))}")
    fn = losses_mod.get_loss(loss.name)
    try:
        return fn, resolve_hyperparameters(fn, loss.params)
    except UserError as err:
        raise ConfigError(str(err)) from None


# --------------------------------------------------------------------------------------------------
# documented ranges of the numeric fields

FIELD_RANGES: dict[str, str] = {
    "model.lora.r": "[1, inf)",
    "model.lora.alpha": "(0, inf)",
    "model.lora.dropout": "[0, 1)",
    "data.eval_fraction": "[0, 1)",
    "data.max_length": "[2, inf)",
    "data.max_prompt_length": "[1, inf)",
    "data.max_examples": "[1, inf)",
    "reference.batch_size": "[1, inf)",
    "train.epochs": "[1, inf)",
    "train.max_steps": "[1, inf)",
    "train.per_device_batch_size": "[1, inf)",
    "train.gradient_accumulation_steps": "[1, inf)",
    "train.global_batch_size": "[1, inf)",
    "train.learning_rate": "(0, inf)",
    "train.warmup_ratio": "[0, 1]",
    "train.weight_decay": "[0, inf)",
    "train.adam_beta1": "[0, 1)",
    "train.adam_beta2": "[0, 1)",
    "train.adam_epsilon": "(0, inf)",
    "train.max_grad_norm": "(0, inf)",
    "train.seed": "[0, 4294967295]",
    "logging.logging_steps": "[1, inf)",
    "logging.eval_steps": "[1, inf)",
    "logging.save_steps": "[1, inf)",
    "logging.save_total_limit": "[1, inf)",
    "diagnostics.probe_size": "[1, inf)",
    "diagnostics.probe_steps": "[1, inf)",
}
"""The documented range of every numeric field, in interval notation (``inf`` is never included, so NaN
and infinities are always out). ``None``, where a field allows it, is always accepted (off / derived /
no limit). Loss hyper-parameters are not here: each loss declares its own (``loss.ranges``)."""

_FIELD_WHY = {
    "train.max_grad_norm": "a negative norm turns every update into gradient ascent and 0 zeroes it; "
                           "null turns clipping off",
    "train.learning_rate": "0 trains nothing, a negative rate climbs the loss",
    "train.epochs": "the untrained model would be saved as final/",
    "train.max_steps": "the untrained model would be saved as final/; null runs train.epochs epochs",
    "train.adam_beta1": "AdamW's moment decay rates lie in [0, 1)",
    "train.adam_beta2": "AdamW's moment decay rates lie in [0, 1)",
    "train.weight_decay": "a negative decay pushes the weights away from 0",
    "train.seed": "seeds are 32-bit",
    "diagnostics.probe_size": "pairs in the probe set; null: no probe set (with probe_path: all its pairs)",
    "diagnostics.probe_steps": "optimizer steps between probe passes; null: every logging.logging_steps",
    "data.max_length": "one prompt token and one completion token at least; null: no truncation",
}


def _get(config: TrainConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_ranges(config: TrainConfig) -> None:
    """Every numeric field inside its documented range (``FIELD_RANGES``); ConfigError naming the key."""
    from alphapo.losses.contract import Interval

    for key, spec in FIELD_RANGES.items():
        value = _get(config, key)
        if value is None:
            continue
        interval = Interval.parse(spec)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in interval:
            why = f" ({_FIELD_WHY[key]})" if key in _FIELD_WHY else ""
            raise ConfigError(f"{key}={value!r} is outside {interval}{why}")
    d = config.data
    if d.max_length is not None and d.max_prompt_length is not None and d.max_prompt_length >= d.max_length:
        raise ConfigError(f"data.max_prompt_length={d.max_prompt_length} must be below data.max_length="
                          f"{d.max_length} (the completion needs room)")


def resolve_config(config: TrainConfig) -> TrainConfig:
    """The checks that need neither files nor the network: numeric ranges and the loss (its name, its
    hyper-parameters' names, types and documented ranges).

    Fills ``config.loss.params`` with every hyper-parameter of the loss and the value used, defaults
    included (in place, and returns ``config``), so that the saved config.yaml and the model card show
    what the run used.
    """
    check_ranges(config)
    config.loss.params = _resolved_loss(config.loss)[1]
    return config


# --------------------------------------------------------------------------------------------------
# paths

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def _looks_local(value: str) -> bool:
    """Whether ``value`` is meant as a local path: it starts like one (./ ../ / ~), has more than one
    ``/`` or a backslash, or its first folder exists here. Otherwise it may be a hub id ``owner/name``."""
    if value in (".", "..") or value.startswith(("./", "../", "/", "~")) or "\\" in value:
        return True
    parts = value.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).exists())


def check_model_path(key: str, value: str) -> None:
    """A model given as a local folder must be a saved model folder; anything else must look like a hub id.

    Decided from the string alone, without the network: a missing local path is "no such file or
    directory", never a hub lookup with retries.
    """
    if not value:
        raise ConfigError(f"{key} is required: a local model folder or a hub id such as 'owner/name'")
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{key}={value!r} is a file; give the model's folder (the one holding config.json)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}={value!r}: the folder has no config.json, so it is not a saved model; "
                              "give the folder that save_pretrained wrote")
        return
    if _looks_local(value):
        raise ConfigError(f"{key}={value!r}: no such file or directory ({path.absolute()})")
    if not _HUB_ID.fullmatch(value) or ".." in value or "--" in value:
        raise ConfigError(f"{key}={value!r} is neither an existing folder nor a hub id such as 'owner/name'")


def check_output_dir(value: str) -> None:
    """``output_dir`` must be a folder, or creatable, in a place this process can write to."""
    if not value:
        raise ConfigError("output_dir is required")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir={value!r} is a file; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir={value!r}: {existing} is a file, so the folder cannot be created")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".alphapo-write-test-")
    except OSError as err:
        raise ConfigError(f"output_dir={value!r}: cannot write in {existing} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def validate(config: TrainConfig) -> TrainConfig:
    """Everything that can be checked before loading a model or data: ``resolve_config`` (ranges, loss
    hyper-parameters, defaults filled in), the required keys, the model paths and ``output_dir``.

    Returns ``config`` (its ``loss.params`` resolved in place). Errors are ConfigError, one line each.
    """
    resolve_config(config)
    check_model_path("model.name_or_path", config.model.name_or_path)
    if config.reference.name_or_path is not None:
        check_model_path("reference.name_or_path", config.reference.name_or_path)
    if not config.data.train_path:
        raise ConfigError("data.train_path is required (a JSONL/JSON/Parquet file or dataset folder)")
    probe_path = config.diagnostics.probe_path
    if probe_path is not None and not Path(probe_path).exists():
        raise ConfigError(f"diagnostics.probe_path={probe_path!r} does not exist (a preference file whose pairs "
                          "form the probe set; null: probe the eval split or the training set)")
    check_output_dir(config.output_dir)
    return config


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
