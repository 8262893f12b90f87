"""Model folders and ``output_dir`` are checked before any heavy work, with one-line errors (exit 2).

A local-looking model path that does not exist is "no such file or directory", decided from the string
(./ ../ / ~, several slashes, or a first folder that exists here), never a hub lookup with network
retries; ``owner/name`` and bare names are left to the hub.
"""

from __future__ import annotations

import os
import sys

import pytest

from alphapo.cli import main
from alphapo.training.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    ReferenceConfig,
    TrainConfig,
    check_model_path,
    check_output_dir,
    validate,
)


def test_a_saved_model_folder_and_hub_ids_pass(tiny_model_dir):
    check_model_path("model.name_or_path", str(tiny_model_dir))
    for hub_id in ("gpt2", "meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2.5-0.5B", "owner/name.v1_2"):
        check_model_path("model.name_or_path", hub_id)  # no file system or network answer needed


@pytest.mark.parametrize("value", ["./missing/model", "../no-such-model-alphapo", "/nonexistent/alphapo/model",
                                   "~/no-such-model-alphapo", "runs/a/final", "models\\llama"])
def test_a_missing_local_path_is_no_such_file(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"model.name_or_path=.*: no such file or directory \("):
        check_model_path("model.name_or_path", value)


def test_owner_name_whose_first_folder_exists_here_is_local(tmp_path, monkeypatch):
    """``runs/final`` would be a valid hub id, but ``runs/`` exists here: it is a mistyped local path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="'runs/final': no such file or directory"):
        check_model_path("model.name_or_path", "runs/final")


def test_a_file_a_folder_without_config_json_and_a_bad_id_are_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"model.name_or_path='.*config.json' is a file; give the model's folder"):
        check_model_path("model.name_or_path", str(tiny_model_dir / "config.json"))
    with pytest.raises(ConfigError, match="the folder has no config.json"):
        check_model_path("model.name_or_path", str(tmp_path))
    with pytest.raises(ConfigError, match="'my model!' is neither an existing folder nor a hub id"):
        check_model_path("model.name_or_path", "my model!")
    with pytest.raises(ConfigError, match="model.name_or_path is required"):
        check_model_path("model.name_or_path", "")


def test_output_dir_that_is_a_file_or_under_a_file_is_an_error(tmp_path):
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir='.*out.txt' is a file; give a folder"):
        check_output_dir(str(afile))
    with pytest.raises(ConfigError, match=r"out.txt is a file, so the folder cannot be created"):
        check_output_dir(str(afile / "run"))
    check_output_dir(str(tmp_path / "new" / "deeper"))  # creatable: fine, and nothing is created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_output_dir_where_nothing_can_be_written_is_an_error():
    """/proc refuses new files even to root, so this holds whoever runs the tests."""
    with pytest.raises(ConfigError, match=r"output_dir='/proc/alphapo-run': cannot write in /proc \("):
        check_output_dir("/proc/alphapo-run")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_an_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot write in"):
            check_output_dir(str(ro / "run"))
    finally:
        ro.chmod(0o755)


def test_validate_checks_the_reference_path_too(tiny_model_dir, pairs_path, tmp_path):
    config = TrainConfig(model=ModelConfig(str(tiny_model_dir)), data=DataConfig(str(pairs_path)),
                         reference=ReferenceConfig(name_or_path="./no-ref-model"), output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="reference.name_or_path='./no-ref-model': no such file"):
        validate(config)


@pytest.mark.parametrize("override, message", [
    ("model.name_or_path=./no/such/model", "model.name_or_path='./no/such/model': no such file or directory"),
    ("model.name_or_path={model}/config.json", "is a file; give the model's folder"),
    ("output_dir={pairs}", "is a file; give a folder"),
])
def test_the_command_line_exits_2_with_one_line_before_loading_anything(override, message, tiny_model_dir,
                                                                          pairs_path, tmp_path, capsys,
                                                                          monkeypatch):
    import alphapo.training.trainer as trainer

    def must_not_run(config):
        raise AssertionError("train() must not start on an invalid config")

    monkeypatch.setattr(trainer, "train", must_not_run)
    argv = ["train", f"model.name_or_path={tiny_model_dir}", f"data.train_path={pairs_path}",
            f"output_dir={tmp_path / 'out'}", override.format(model=tiny_model_dir, pairs=pairs_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("alphapo train: error: ") and err.count("\n") == 1
