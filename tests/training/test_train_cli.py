"""``alphapo train`` / ``alphapo plot-run`` through the real dispatcher, and every shipped config loads."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from alphapo.cli import main
from alphapo.training.config import load_config, resolve_config

SHIPPED = sorted(p.name for p in resources.files("alphapo.configs").iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_and_validates(name):
    with resources.as_file(resources.files("alphapo.configs") / name) as path:
        config = load_config(path)
    resolve_config(config)  # keys, types, ranges and the loss's hyper-parameters (model/output paths are
    # placeholders in shipped configs: validate() checks those at train time)


def test_train_and_plot_run_from_the_command_line(tiny_model_dir, pairs_path, tmp_path, capsys):
    out = tmp_path / "cli_run"
    with resources.as_file(resources.files("alphapo.configs") / "tiny_cpu.yaml") as cfg:
        code = main(["train", str(cfg), f"model.name_or_path={tiny_model_dir}", f"data.train_path={pairs_path}",
                     f"output_dir={out}", "train.max_steps=2", "logging.progress_bar=false",
                     "logging.tensorboard=false", "loss.alpha=0.5", "resume=true"])
    assert code == 0
    assert capsys.readouterr().out == f"alphapo train: 2 steps; final model in {out / 'final'}\n"
    saved = load_config(out / "config.yaml")
    assert saved.loss.params["alpha"] == 0.5 and saved.train.max_steps == 2  # the resolved config is kept
    assert "resume" not in (out / "config.yaml").read_text()  # re-running the saved file starts fresh
    assert len([line for line in (out / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["split"] == "train"]) == 2
    assert main(["plot-run", str(out)]) == 0
    pngs = {p.name for p in (out / "plots").iterdir()}
    assert {"lnorm_train.png", "lnorm_eval.png", "training.png"} <= pngs
    assert all((out / "plots" / p).stat().st_size > 10_000 for p in pngs)
    # several runs: a Figure-2-style comparison, lines labelled from each run's config.yaml
    from alphapo.training.plotting import run_label

    assert main(["plot-run", str(out), str(out), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare_lnorm.png").stat().st_size > 10_000
    assert run_label(out) == "alphapo alpha=0.5 beta=2.5 gamma=0.25"


@pytest.mark.parametrize("override, message", [
    ("train.lerning_rate=1", "did you mean 'train.learning_rate'"),
    ("loss.gama=1", "no hyper-parameter 'gama'; did you mean 'gamma'"),
    ("loss.name=alpahpo", "did you mean 'alphapo'"),
])
def test_misspelled_keys_exit_2_with_a_suggestion(override, message, tiny_model_dir, pairs_path, tmp_path,
                                                  capsys):
    code = main(["train", f"model.name_or_path={tiny_model_dir}", f"data.train_path={pairs_path}",
                 f"output_dir={tmp_path}/x", override])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line, no traceback


def test_print_config_shows_resolved_values(capsys):
    assert main(["train", "--print-config", "loss.name=simpo", "loss.beta=3"]) == 0
    text = capsys.readouterr().out
    assert "name: simpo" in text and "beta: 3" in text and "warmup_ratio: 0.1" in text


def test_a_failed_plot_save_keeps_the_previous_png(tmp_path, monkeypatch):
    """A save that dies midway (disk full, kill) must not leave a truncated PNG under the final name."""
    import matplotlib.figure

    from alphapo.training.plotting import plot_run

    run = tmp_path / "run"
    run.mkdir()
    rec = {"step": 1, "epoch": 0.5, "split": "train", "loss": 0.69}
    (run / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    plots = run / "plots"
    plots.mkdir()
    (plots / "training.png").write_bytes(b"previous")

    def dies_midway(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG trunc")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        plot_run(run)
    assert (plots / "training.png").read_bytes() == b"previous"
    assert sorted(p.name for p in plots.iterdir()) == ["training.png"]  # no temp file, no partial lnorm
