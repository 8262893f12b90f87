"""Every numeric config field is checked against its documented range, in one place, naming the key.

Each case below was accepted before and trained the wrong thing or crashed later: a negative
``max_grad_norm`` turned every step into exact gradient ascent, ``max_steps=0`` saved an untrained
``final/`` with exit 0, a NaN learning rate or Adam beta outside [0, 1) gave tracebacks mid-run.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from alphapo.cli import main
from alphapo.training.config import (
    FIELD_RANGES,
    ConfigError,
    TrainConfig,
    apply_overrides,
    resolve_config,
    valid_keys,
)


def resolved(*overrides: str) -> TrainConfig:
    return resolve_config(apply_overrides(TrainConfig(), list(overrides)))


@pytest.mark.parametrize("override, message", [
    ("train.max_grad_norm=-1", r"train.max_grad_norm=-1.0 is outside \(0, inf\) \(a negative norm turns every "
                               r"update into gradient ascent"),
    ("train.max_grad_norm=0", r"train.max_grad_norm=0.0 is outside \(0, inf\)"),
    ("train.max_steps=0", r"train.max_steps=0 is outside \[1, inf\) \(the untrained model"),
    ("train.epochs=0", r"train.epochs=0 is outside \[1, inf\)"),
    ("train.epochs=-2", r"train.epochs=-2 is outside \[1, inf\)"),
    ("train.learning_rate=-1e-6", r"train.learning_rate=-1e-06 is outside \(0, inf\)"),
    ("train.learning_rate=nan", r"train.learning_rate=nan is outside \(0, inf\)"),
    ("train.learning_rate=inf", r"train.learning_rate=inf is outside \(0, inf\)"),
    ("train.learning_rate=0", r"train.learning_rate=0.0 is outside \(0, inf\) \(0 trains nothing"),
    ("train.adam_beta1=1.0", r"train.adam_beta1=1.0 is outside \[0, 1\)"),
    ("train.adam_beta2=-0.1", r"train.adam_beta2=-0.1 is outside \[0, 1\)"),
    ("train.adam_beta2=1", r"train.adam_beta2=1.0 is outside \[0, 1\)"),
    ("train.adam_epsilon=0", r"train.adam_epsilon=0.0 is outside \(0, inf\)"),
    ("train.weight_decay=-0.01", r"train.weight_decay=-0.01 is outside \[0, inf\)"),
    ("train.warmup_ratio=1.5", r"train.warmup_ratio=1.5 is outside \[0, 1\]"),
    ("train.per_device_batch_size=0", r"train.per_device_batch_size=0 is outside \[1, inf\)"),
    ("train.gradient_accumulation_steps=0", r"train.gradient_accumulation_steps=0 is outside \[1, inf\)"),
    ("train.global_batch_size=-8", r"train.global_batch_size=-8 is outside \[1, inf\)"),
    ("train.seed=-1", r"train.seed=-1 is outside \[0, 4294967295\]"),
    ("train.seed=4294967296", r"train.seed=4294967296 is outside \[0, 4294967295\]"),
    ("data.eval_fraction=1", r"data.eval_fraction=1.0 is outside \[0, 1\)"),
    ("data.eval_fraction=-0.1", r"data.eval_fraction=-0.1 is outside \[0, 1\)"),
    ("data.max_length=1", r"data.max_length=1 is outside \[2, inf\)"),
    ("data.max_prompt_length=0", r"data.max_prompt_length=0 is outside \[1, inf\)"),
    ("data.max_examples=0", r"data.max_examples=0 is outside \[1, inf\)"),
    ("reference.batch_size=0", r"reference.batch_size=0 is outside \[1, inf\)"),
    ("model.lora.r=0", r"model.lora.r=0 is outside \[1, inf\)"),
    ("model.lora.alpha=0", r"model.lora.alpha=0 is outside \(0, inf\)"),
    ("model.lora.dropout=1", r"model.lora.dropout=1.0 is outside \[0, 1\)"),
    ("logging.logging_steps=0", r"logging.logging_steps=0 is outside \[1, inf\)"),
    ("logging.eval_steps=0", r"logging.eval_steps=0 is outside \[1, inf\)"),
    ("logging.save_steps=-5", r"logging.save_steps=-5 is outside \[1, inf\)"),
    ("logging.save_total_limit=0", r"logging.save_total_limit=0 is outside \[1, inf\)"),
])
def test_a_value_outside_its_documented_range_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolved(override)


@pytest.mark.parametrize("overrides, message", [
    (["loss.name=dpo", "loss.beta=-0.1"], r"loss.beta=-0.1 is outside \(0, inf\).*rejected"),
    (["loss.name=dpo", "loss.beta=0"], r"loss.beta=0 is outside \(0, inf\)"),
    (["loss.name=simpo", "loss.gamma=-0.3"], r"loss.gamma=-0.3 is outside \[0, inf\)"),
    (["loss.name=cdpo", "loss.eps=0.6"], r"loss.eps=0.6 is outside \[0, 0.5\)"),
    (["loss.name=rpo_bwd", "loss.eta=nan"], r"loss.eta=nan is outside \(0, inf\)"),
])
def test_loss_hyperparameters_are_checked_against_the_loss_s_own_ranges(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolved(*overrides)


def test_the_edges_of_each_range_and_null_are_accepted():
    c = resolved("train.max_grad_norm=null", "train.warmup_ratio=0", "train.adam_beta1=0", "train.adam_beta2=0",
                 "train.weight_decay=0", "data.eval_fraction=0", "data.max_length=2", "data.max_prompt_length=1",
                 "train.seed=0", "train.max_steps=1", "train.epochs=1", "loss.name=rloo", "loss.beta=0")
    assert c.train.max_grad_norm is None and c.data.max_length == 2 and c.loss.params == {"beta": 0.0}
    assert resolved("train.seed=4294967295", "data.max_length=null").train.seed == 2**32 - 1
    assert resolved("train.warmup_ratio=1").train.warmup_ratio == 1.0  # transformers accepts [0, 1]


def test_the_prompt_limit_must_leave_room_for_the_completion():
    with pytest.raises(ConfigError, match="data.max_prompt_length=64 must be below data.max_length=64"):
        resolved("data.max_length=64", "data.max_prompt_length=64")


def _numeric_keys(cls=TrainConfig, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _numeric_keys(hint, f"{prefix}{f.name}.")
        elif {int, float} & (set(typing.get_args(hint)) | {hint}):
            keys.add(prefix + f.name)
    return keys


def test_every_numeric_field_has_a_documented_range():
    """A new int/float field without an entry in FIELD_RANGES fails here (and every entry is a real key)."""
    assert set(FIELD_RANGES) == _numeric_keys()
    assert set(FIELD_RANGES) <= set(valid_keys())


@pytest.mark.parametrize("argv", [
    ["train", "train.max_grad_norm=-1"],
    ["train", "--print-config", "train.max_grad_norm=-1"],
])
def test_the_command_line_exits_2_with_one_line_before_any_training(argv, tiny_model_dir, pairs_path, tmp_path,
                                                                     capsys, monkeypatch):
    import alphapo.training.trainer as trainer

    def must_not_run(config):
        raise AssertionError("train() must not start on an invalid config")

    monkeypatch.setattr(trainer, "train", must_not_run)
    code = main(argv + [f"model.name_or_path={tiny_model_dir}", f"data.train_path={pairs_path}",
                        f"output_dir={tmp_path / 'out'}"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err == ("alphapo train: error: train.max_grad_norm=-1.0 is outside (0, inf) (a negative norm "
                            "turns every update into gradient ascent and 0 zeroes it; null turns clipping off)\n")
    assert not (tmp_path / "out").exists()
