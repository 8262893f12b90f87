"""``alphapo plot-run``: where the PNGs of several runs go, and their file mode."""

from __future__ import annotations

import json
import os

import pytest

from alphapo.cli import main

_RECORD = {"step": 1, "epoch": 0.5, "split": "train", "loss": 0.69,
           **{f"lnorm/{q}/{s}": -1.0 for q in ("chosen", "rejected", "margin")
              for s in ("mean", "q1", "median", "q3", "min", "max")}}


def _run(path):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text(json.dumps(_RECORD) + "\n")
    return path


def test_several_runs_with_out_put_every_png_under_out_with_the_umask_mode(tmp_path, capsys):
    a, b = _run(tmp_path / "x" / "alpha_0.25"), _run(tmp_path / "y" / "alpha_1")
    old = os.umask(0o022)
    try:
        assert main(["plot-run", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    finally:
        os.umask(old)
    written = sorted(str(p.relative_to(tmp_path / "cmp")) for p in (tmp_path / "cmp").rglob("*.png"))
    assert written == ["alpha_0.25/lnorm_train.png", "alpha_0.25/training.png", "alpha_1/lnorm_train.png",
                       "alpha_1/training.png", "compare_lnorm.png"]
    assert capsys.readouterr().out.count("\n") == 5  # one printed path per PNG
    assert not (a / "plots").exists() and not (b / "plots").exists()  # --out means nothing lands in the runs
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "cmp").rglob("*.png")} == {0o644}  # not 0600


def test_runs_whose_folders_share_a_name_are_refused_rather_than_overwritten(tmp_path, capsys):
    a, b = _run(tmp_path / "x" / "run"), _run(tmp_path / "y" / "run")
    assert main(["plot-run", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "same folder name 'run'" in err and err.count("\n") == 1
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("n_times", [1, 2])
def test_one_run_keeps_its_plots_folder_by_default(tmp_path, n_times, capsys):
    a = _run(tmp_path / "run")
    assert main(["plot-run", *[str(a)] * n_times]) == 0
    names = sorted(p.name for p in (a / "plots").iterdir())
    assert names == (["lnorm_train.png", "training.png"] if n_times == 1
                     else ["compare_lnorm.png", "lnorm_train.png", "training.png"])
