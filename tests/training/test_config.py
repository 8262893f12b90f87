"""Config tree: YAML + overrides + Python agree, unknown keys fail with a suggestion, loss params checked."""

from __future__ import annotations

import pytest

from alphapo.training.config import (
    ConfigError,
    LossConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    resolve_accumulation,
    save_config,
    validate_loss_params,
)


def test_defaults_follow_the_papers():
    c = TrainConfig()
    assert c.train.epochs == 1 and c.train.lr_scheduler == "cosine" and c.train.warmup_ratio == 0.1
    assert c.model.trust_remote_code is False


def test_yaml_and_overrides_coerce_types(tmp_path):
    path = tmp_path / "run.yaml"
    # PyYAML reads "1e-6" as a *string*; the field type makes it a float
    path.write_text("train:\n  learning_rate: 1e-6\n  max_steps: 3\nloss:\n  name: dpo\n  beta: 0.1\n")
    c = load_config(path, ["train.per_device_batch_size=4", "loss.beta=2.5", "logging.tensorboard=false",
                           "train.max_grad_norm=none", "model.lora.target_modules=q_proj,v_proj"])
    assert c.train.learning_rate == pytest.approx(1e-6) and isinstance(c.train.learning_rate, float)
    assert c.train.max_steps == 3 and c.train.per_device_batch_size == 4
    assert c.loss == LossConfig("dpo", {"beta": 2.5})
    assert c.logging.tensorboard is False and c.train.max_grad_norm is None
    assert c.model.lora.target_modules == ["q_proj", "v_proj"]


def test_round_trip_through_saved_yaml(tmp_path):
    c = apply_overrides(TrainConfig(), ["loss.name=simpo", "loss.gamma=0.5", "train.seed=7"])
    save_config(c, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == c


@pytest.mark.parametrize("override, expected", [
    ("train.learnig_rate=1", "train.learning_rate"),
    ("lerning_rate=1", "train.learning_rate"),
    ("logging.eval_step=3", "logging.eval_steps"),
])
def test_unknown_key_names_nearest(override, expected):
    with pytest.raises(ConfigError, match=rf"'{override.split('=')[0]}'.*did you mean '{expected}'"):
        apply_overrides(TrainConfig(), [override])


def test_unknown_yaml_key_names_nearest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  warmup_ration: 0.1\n")
    with pytest.raises(ConfigError, match="train.warmup_ration.*train.warmup_ratio"):
        load_config(path)


def test_bad_value_type_names_key():
    with pytest.raises(ConfigError, match="train.per_device_batch_size: expected an integer"):
        apply_overrides(TrainConfig(), ["train.per_device_batch_size=two"])
    with pytest.raises(ConfigError, match="lr_scheduler"):
        apply_overrides(TrainConfig(), ["train.lr_scheduler=cosin"])


def test_loss_params_checked_against_signature(fake_losses):
    assert validate_loss_params(LossConfig("simpo", {"beta": 2.0, "gamma": 0.5})) is fake_losses["simpo"]
    with pytest.raises(ConfigError, match="no hyper-parameter 'gama'.*did you mean 'gamma'"):
        validate_loss_params(LossConfig("simpo", {"gama": 0.5}))
    with pytest.raises(ConfigError, match="unknown loss 'simpoo'.*did you mean 'simpo'"):
        validate_loss_params(LossConfig("simpoo"))


def test_global_batch_reached_by_accumulation():
    c = apply_overrides(TrainConfig(), ["train.per_device_batch_size=2", "train.global_batch_size=16"])
    assert resolve_accumulation(c.train, num_processes=2) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_accumulation(c.train, num_processes=3)
