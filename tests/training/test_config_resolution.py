"""Switching losses from the command line, ``loss.KEY=null``, the loss defaults written into what is saved,
``--print-config`` checking what it prints, and ``resume`` kept out of the saved config.yaml."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from alphapo.cli import main
from alphapo.training.config import (
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    load_config,
    resolve_config,
    save_config,
    validate,
)


def tiny_cpu(overrides, notes=None):
    """The shipped tiny_cpu.yaml (loss alphapo, alpha 0.25, beta 2.5, gamma 0.25) with overrides."""
    with resources.as_file(resources.files("alphapo.configs") / "tiny_cpu.yaml") as path:
        return load_config(path, overrides, log=(notes if notes is not None else []).append)


def test_switching_the_loss_drops_the_file_s_hyperparameters_and_says_so():
    """tiny_cpu.yaml is alphapo with alpha; dpo has no alpha, and beta=2.5 was chosen for alphapo."""
    notes: list[str] = []
    c = tiny_cpu(["loss.name=dpo"], notes)
    assert c.loss == LossConfig("dpo", {})
    assert notes == ["loss.name=dpo replaces loss 'alphapo'; its hyper-parameters from the config (alpha=0.25, "
                     "beta=2.5, gamma=0.25) are dropped (set loss.KEY=VALUE to keep any)"]
    assert resolve_config(c).loss.params == {"beta": 0.1, "gamma": 0.0}  # dpo with its own defaults


def test_hyperparameters_given_with_the_switch_apply_to_the_new_loss():
    c = tiny_cpu(["loss.beta=0.05", "loss.name=rpo_bwd", "loss.eta=2", "loss.alpha=null"])
    assert c.loss == LossConfig("rpo_bwd", {"beta": 0.05, "eta": 2})
    same = tiny_cpu(["loss.name=alphapo", "loss.beta=3"])  # naming the same loss keeps the file's settings
    assert same.loss == LossConfig("alphapo", {"alpha": 0.25, "beta": 3, "gamma": 0.25})


def test_null_removes_a_loss_key_on_the_command_line_and_in_yaml(tmp_path):
    c = tiny_cpu(["loss.alpha=null"])
    assert c.loss == LossConfig("alphapo", {"beta": 2.5, "gamma": 0.25})
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  name: simpo\n  gamma: null\n  beta: 2.0\n")
    assert load_config(path).loss == LossConfig("simpo", {"beta": 2.0})
    # a key the new loss lacks, given on the command line, is still an error
    with pytest.raises(ConfigError, match="loss 'dpo' has no hyper-parameter 'alpha'"):
        resolve_config(tiny_cpu(["loss.name=dpo", "loss.alpha=0.5"]))


def test_the_saved_config_and_the_model_card_show_the_loss_defaults_used(tiny_model_dir, pairs_path, tmp_path):
    from alphapo.training.trainer import model_card

    config = TrainConfig(model=ModelConfig(str(tiny_model_dir)), data=DataConfig(str(pairs_path)),
                         loss=LossConfig("rpo_bwd", {"beta": 0.2}), output_dir=str(tmp_path / "run"), resume=True)
    validate(config)  # what train() does first, before it saves config.yaml
    assert config.loss.params == {"beta": 0.2, "gamma": 0.0, "eta": 1.0}
    save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["loss"] == {"name": "rpo_bwd", "beta": 0.2, "gamma": 0.0, "eta": 1.0}
    assert "resume" not in saved  # how this launch started, not a setting of the run
    assert load_config(tmp_path / "config.yaml").resume is False
    card = model_card(config, step=1, train_metrics={}, eval_metrics={})
    assert "loss **rpo_bwd** (beta=0.2, gamma=0.0, eta=1.0)" in card


def test_print_config_rejects_unknown_loss_keys_and_prints_the_defaults(capsys):
    assert main(["train", "--print-config", "loss.name=simpo", "loss.gama=1"]) == 2
    err = capsys.readouterr().err
    assert err == ("alphapo train: error: loss 'simpo' has no hyper-parameter 'gama'; did you mean 'gamma'?\n")
    assert main(["train", "--print-config", "loss.name=rpo_multi", "loss.beta=0.3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["loss"] == {"name": "rpo_multi", "beta": 0.3, "eta": 1.0}


def test_switching_loss_on_the_command_line_runs(capsys):
    with resources.as_file(resources.files("alphapo.configs") / "tiny_cpu.yaml") as path:
        assert main(["train", "--print-config", str(path), "loss.name=dpo", "loss.beta=0.1"]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out)["loss"] == {"name": "dpo", "beta": 0.1, "gamma": 0.0}
    assert captured.err.startswith("alphapo train: loss.name=dpo replaces loss 'alphapo'")


def test_chat_template_mode_is_one_of_auto_always_never(tmp_path):
    assert TrainConfig().data.chat_template == "auto"
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  chat_template: never\n")
    assert load_config(path).data.chat_template == "never"
    with pytest.raises(ConfigError, match=r"data.chat_template: 'sometimes' is not one of \['auto', 'always', "
                                          r"'never'\]"):
        load_config(None, ["data.chat_template=sometimes"])
