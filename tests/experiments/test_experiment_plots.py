"""``alphapo experiment-plot``: the data series behind each figure, checked against the experiment's own
results and hand-made probe / evaluation curves."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from alphapo.cli import main
from alphapo.errors import UserError
from alphapo.experiments.plots import plot_experiment, sweep_figure, sweep_series
from alphapo.experiments.recipe import parse_recipe
from alphapo.experiments.runner import run_experiment
from alphapo.experiments.stats import mean_ci

RECIPE = {"job": "synthetic", "seeds": [0, 1, 2], "params": {"n_val": 5, "n_test": 6},
          "methods": {"alpha0": {"params": {"alpha": 0.0}}, "alphapo": {"grid": {"alpha": [1.0, 0.1, 0.25]}}}}


def _chosen(alpha: float, seed: int, step: int) -> float:  # hand-made probe values
    return -1.0 - 0.01 * step * (1 + alpha) + 0.1 * seed


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    summary = run_experiment(parse_recipe(RECIPE, "alpha.yaml"), out, jobs=1, progress=False)
    # what the toy job would add: probe records, end-of-training margin quartiles, eval_steps curves
    for path in sorted(out.glob("runs/**/result.json")):
        result = json.loads(path.read_text())
        alpha, seed = result["spec"]["params"]["alpha"], result["spec"]["seed"]
        # seed 2 probed once more (step 15: not a common step); the end probe is at 25 + seed
        steps = [0, 10] + ([15] if seed == 2 else []) + [20, 25 + seed]
        train = path.parent / "work" / "train"
        train.mkdir(parents=True)
        (train / "metrics.jsonl").write_text("".join(
            json.dumps({"split": "probe", "step": t, "probe/chosen_lnorm": _chosen(alpha, seed, t),
                        "probe/rejected_lnorm": 2 * _chosen(alpha, seed, t)}) + "\n" for t in steps)
            + json.dumps({"step": 10, "loss": 0.5}) + "\n")
        result["metrics"].update({"probe/margin_lnorm/q1": alpha + seed, "probe/margin_lnorm/median": 2 * alpha + seed,
                                  "probe/margin_lnorm/q3": 3 * alpha + seed})
        curve = [{"step": 0, "win_rate": 0.5, "kl_k1": 0.0, "kl_k3": 0.0}]
        curve += [{"step": 20, "win_rate": 0.5 + 0.1 * alpha, "kl_k1": alpha + seed, "kl_k3": 0.5 * alpha}]
        if seed == 2:
            curve += [{"step": 30, "win_rate": 0.9, "kl_k1": 9.0, "kl_k3": 9.0}]
        curve += [{"step": 40 + seed, "win_rate": 0.6 + 0.01 * seed, "kl_k1": 2 * alpha + seed, "kl_k3": alpha}]
        result["extra"] = {"eval_curve": curve}
        path.write_text(json.dumps(result))
    files = plot_experiment(out, ["test/score", "val/score"])
    return out, summary, files, json.loads((out / "plots" / "plots.json").read_text())


def test_metric_vs_swept_parameter_is_the_table_with_its_intervals(experiment):
    out, summary, files, data = experiment
    names = sorted(p.name for p in files)
    assert names == sorted(["test_score_vs_alpha.png", "val_score_vs_alpha.png", "probe_lnorm_vs_step.png",
                            "margin_quartiles.png", "kl_vs_step.png", "win_rate_vs_step.png",
                            "win_rate_vs_kl.png", "plots.json"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in files if p.suffix == ".png")
    (line,) = data["test_score_vs_alpha.png"]  # alpha0 (alpha = 0) and the alphapo grid: one line
    assert line["label"] == "alpha0 + alphapo" and line["x"] == [0.0, 0.1, 0.25, 1.0]
    results = [json.loads(p.read_text()) for p in out.glob("runs/**/result.json")]
    for x, mean, lo, hi in zip(line["x"], line["mean"], line["ci_low"], line["ci_high"]):
        scores = [r["metrics"]["test/score"] for r in results if r["spec"]["params"]["alpha"] == x]
        assert len(scores) == 3
        assert (mean, lo, hi) == pytest.approx(mean_ci(scores))
    # the figure draws exactly that series
    fig = sweep_figure(sweep_series(summary["rows"], "alpha", "test/score"), "alpha", "test/score", "t")
    xy = fig.axes[0].lines[0].get_xydata()
    assert xy[:, 0].tolist() == line["x"] and xy[:, 1].tolist() == pytest.approx(line["mean"])


def test_probe_curves_margins_and_eval_curves_are_means_over_seeds(experiment):
    _, _, _, data = experiment
    probes = data["probe_lnorm_vs_step.png"]
    assert sorted(probes) == ["alpha0", "alphapo (alpha=0.1)", "alphapo (alpha=0.25)", "alphapo (alpha=1)"]
    c = probes["alphapo (alpha=1)"]
    assert c["step"] == [0, 10, 20, 26]  # step 15: seed 2 only; the ends (25, 26, 27) at their mean
    assert c["chosen"]["mean"] == pytest.approx([statistics.mean(_chosen(1.0, s, t) for s in range(3))
                                                 for t in (0, 10, 20)]
                                                + [statistics.mean(_chosen(1.0, s, 25 + s) for s in range(3))])
    assert c["rejected"]["mean"] == pytest.approx([2 * m for m in c["chosen"]["mean"]])
    # q1 = alpha + seed etc.: the mean over seeds 0, 1, 2 adds 1
    assert data["margin_quartiles.png"]["alphapo (alpha=0.25)"] == pytest.approx(
        {"q1": 1.25, "median": 1.5, "q3": 1.75})
    ev = data["kl_vs_step.png"]["alphapo (alpha=0.25)"]
    assert ev["step"] == [0.0, 20.0, 41.0]  # step 30 (seed 2 only) dropped; the ends (40, 41, 42) at 41
    assert ev["kl_k1"]["mean"] == pytest.approx([0.0, 1.25, 1.5])
    assert ev["kl_k3"]["mean"] == pytest.approx([0.0, 0.125, 0.25])
    assert ev["win_rate"]["mean"] == pytest.approx([0.5, 0.525, 0.61])
    assert data["win_rate_vs_kl.png"] == data["kl_vs_step.png"]


def test_plot_errors_and_cli(experiment, tmp_path, capsys):
    out, _, _, data = experiment
    # a run of an older version of the recipe (other parameters, same label) left in OUT/runs is not mixed in
    stale = json.loads(next(out.glob("runs/alpha0/*/seed0/result.json")).read_text())
    stale["spec"]["config_hash"] = "0" * 64
    stale["metrics"]["test/score"] = 1e6
    (out / "runs" / "alpha0" / "old-0000000000" / "seed0").mkdir(parents=True)
    (out / "runs" / "alpha0" / "old-0000000000" / "seed0" / "result.json").write_text(json.dumps(stale))
    plot_experiment(out, ["test/score", "val/score"])
    assert json.loads((out / "plots" / "plots.json").read_text()) == data
    with pytest.raises(UserError, match=r"--metric 'test/scor' is not in .*summary.json's table.*test/score"):
        plot_experiment(out, ["test/scor"])
    with pytest.raises(UserError, match="summary.json does not exist"):
        plot_experiment(tmp_path)
    assert main(["experiment-plot", str(out), "--metric", "test/score"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(Path(out) / "plots" / "test_score_vs_alpha.png") in printed
    assert main(["experiment-plot", str(tmp_path)]) == 2
