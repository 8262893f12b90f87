"""The experiment runner: tables against hand computations, shared stages once per seed, failures,
and resume after a SIGKILL mid-grid."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import alphapo
from alphapo.cli import main
from alphapo.errors import UserError
from alphapo.experiments.recipe import expand_grid, parse_recipe
from alphapo.experiments.registry import Param, register_job, register_stage
from alphapo.experiments.runner import run_experiment
from alphapo.experiments.synthetic import objective

T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # closed form of the Student-t quantile with 2 d.o.f.

RECIPE = {
    "name": "demo",
    "job": "synthetic",
    "seeds": [0, 1, 2],
    "params": {"n_val": 4, "n_test": 5, "noise": 0.2, "seed_noise": 0.1},
    "methods": {"simpo": {"params": {"alpha": 0.0}},
                "alphapo": {"params": {"alpha": 0.25}, "grid": {"gamma": [0.25, 1.0]}}},
    "compare": {"metric": "test/score", "pairs": [["alphapo", "simpo"]]},
}


def _results(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out / "runs")): json.loads(p.read_text())
            for p in (out / "runs").rglob("result.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    summary = run_experiment(parse_recipe(RECIPE, "demo.yaml"), out, jobs=2, progress=False)
    return out, summary


def test_table_is_the_mean_and_t_interval_of_the_run_results(finished):
    out, summary = finished
    results = _results(out)
    assert len(results) == 9
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["config"] for r in rows] == ["simpo", "alphapo (gamma=0.25)", "alphapo (gamma=1)"]
    for row in rows:
        per_seed = [r["metrics"]["test/score"] for r in results.values() if r["spec"]["config"] == row["config"]]
        assert len(per_seed) == 3 and row["n_seeds"] == "3"
        mean = sum(per_seed) / 3
        half = T975_DF2 * statistics.stdev(per_seed) / math.sqrt(3)
        assert float(row["test/score_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["test/score_ci_low"]) == pytest.approx(mean - half, rel=1e-9)
        assert float(row["test/score_ci_high"]) == pytest.approx(mean + half, rel=1e-9)
    # the noise-free objective is the same for every seed: a zero-width interval at f
    f = objective(0.25, 1.0, 5e-4, 2.5)
    assert float(rows[2]["objective_mean"]) == pytest.approx(f) == float(rows[2]["objective_ci_low"])
    md = (out / "results.md").read_text()
    mean = float(rows[0]["test/score_mean"])
    assert "| simpo | simpo | 3 |" in md and f"{mean:.4g} [" in md


def test_paired_comparison_is_computed_from_per_prompt_scores(finished):
    out, summary = finished
    results = _results(out)
    comps = list(csv.DictReader((out / "comparisons.csv").open()))
    assert [(c["a"], c["b"]) for c in comps] == [("alphapo (gamma=0.25)", "simpo"), ("alphapo (gamma=1)", "simpo")]

    def scores(config, seed):
        return next(r["per_prompt"]["test/score"] for r in results.values()
                    if r["spec"]["config"] == config and r["spec"]["seed"] == seed)

    diffs = [a - b for seed in (0, 1, 2) for a, b in zip(scores("alphapo (gamma=1)", seed), scores("simpo", seed))]
    assert len(diffs) == 15
    gamma1 = summary["comparisons"][1]
    half = alphapo.experiments.stats.t_quantile(0.975, 14) * statistics.stdev(diffs) / math.sqrt(15)
    assert float(comps[1]["mean_diff"]) == pytest.approx(statistics.mean(diffs), rel=1e-12)
    assert float(comps[1]["ci_prompts_low"]) == pytest.approx(statistics.mean(diffs) - half, rel=1e-9)
    per_seed = [statistics.mean(diffs[5 * i:5 * i + 5]) for i in range(3)]
    half_s = T975_DF2 * statistics.stdev(per_seed) / math.sqrt(3)
    assert gamma1["ci_seeds"][1] == pytest.approx(statistics.mean(per_seed) + half_s, rel=1e-9)
    # the mean difference estimates the gap of the noise-free objectives (per-prompt noise sd 0.2 on each side;
    # prompt difficulty and the seed effect cancel in a paired difference)
    gap = objective(0.25, 1.0, 5e-4, 2.5) - objective(0.0, 0.25, 5e-4, 2.5)
    assert abs(statistics.mean(diffs) - gap) < 4 * 0.2 * math.sqrt(2) / math.sqrt(15)


def test_shared_stage_computed_once_per_seed_with_parallel_workers(finished):
    out, _ = finished
    log = [json.loads(line) for line in (out / "shared" / "synthetic_prompts" / "computed.log").read_text().splitlines()]
    assert sorted(entry["seed"] for entry in log) == [0, 1, 2]


def test_rerun_reuses_every_result(finished, capsys):
    out, summary = finished
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("result.json")}
    again = run_experiment(parse_recipe(RECIPE, "demo.yaml"), out, jobs=2, progress=True)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("result.json")} == before
    assert "9/9 runs already finished (kept), 0 to go" in capsys.readouterr().err
    assert again["rows"] == summary["rows"]


def test_resume_after_sigkill_mid_grid(tmp_path):
    """Kill the runner (and its workers) with SIGKILL mid-grid; the restart keeps finished runs."""
    recipe = {**RECIPE, "params": {**RECIPE["params"], "sleep": 0.4}, "seeds": [0, 1, 2, 3]}  # 12 runs
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(alphapo.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "alphapo.cli", "experiment", str(path), "--out", str(out),
           "--jobs", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(list(out.glob("runs/**/result.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its worker processes, mid-run
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("runs/**/result.json")}
    assert 3 <= len(first) < 12
    assert not (out / "results.csv").exists()  # no table while runs are missing
    for p in first:  # every result file on disk is complete JSON (atomic writes)
        assert json.loads(p.read_text())["metrics"]

    done = subprocess.run(cmd[:-1], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)}/12 runs already finished (kept), {12 - len(first)} to go" in done.stderr
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("runs/**/result.json")}
    assert len(after) == 12
    assert {p: after[p] for p in first} == first  # finished runs were not re-run
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["n_seeds"] for r in rows] == ["4", "4", "4"]
    # the resumed table equals one computed from scratch in one go (the job is deterministic)
    fresh = run_experiment(parse_recipe(recipe, "recipe.yaml"), tmp_path / "fresh", jobs=1, progress=False)
    assert (tmp_path / "fresh" / "results.csv").read_text() == (out / "results.csv").read_text()
    assert fresh["n_runs"] == 12


@register_job("test_flaky", params={"x": Param(0.0, float)})
def _flaky(params, shared, out_dir):
    if params["seed"] == 1:
        raise RuntimeError("boom on seed 1")
    return {"metrics": {"score": params["x"] + params["seed"]}}


def test_a_failing_run_is_named_and_the_others_are_kept(tmp_path):
    recipe = parse_recipe({"job": "test_flaky", "seeds": [0, 1, 2], "methods": {"m": {}}}, "flaky.yaml")
    with pytest.raises(UserError, match=r"1 of 3 runs failed: m seed 1 \(.*error.txt\): RuntimeError: boom"):
        run_experiment(recipe, tmp_path, jobs=1, progress=False)
    assert len(list(tmp_path.glob("runs/**/result.json"))) == 2
    assert "boom on seed 1" in next(tmp_path.glob("runs/**/error.txt")).read_text()
    assert not (tmp_path / "results.csv").exists()


@register_job("test_bad_result", params={})
def _bad_result(params, shared, out_dir):
    return {"metrics": {"score": "high"}}


def test_a_job_returning_a_non_number_fails_its_run(tmp_path):
    recipe = parse_recipe({"job": "test_bad_result", "seeds": [0], "methods": {"m": {}}}, "bad.yaml")
    with pytest.raises(UserError, match="metric 'score' is 'high', not a number"):
        run_experiment(recipe, tmp_path, jobs=1, progress=False)


def test_missing_metric_or_per_prompt_scores_is_an_error(tmp_path):
    data = {**RECIPE, "seeds": [0], "metrics": ["test/scor"]}
    with pytest.raises(UserError, match="reports no metric 'test/scor' \\(did you mean 'test/score'\\?\\)"):
        run_experiment(parse_recipe(data, "r.yaml"), tmp_path, jobs=1, progress=False)
    data = {**RECIPE, "seeds": [0], "compare": {"metric": "objective", "pairs": [["alphapo", "simpo"]]}}
    with pytest.raises(UserError, match="has no per-prompt scores 'objective'"):
        run_experiment(parse_recipe(data, "r.yaml"), tmp_path, jobs=1, progress=False)
    assert not (tmp_path / "results.csv").exists()


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "methods": {"simpo": {"params": {"gama": 0.1}}}}))
    assert main(["experiment", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown parameter 'gama' of job 'synthetic' (did you mean 'gamma'?)" in err
    assert not (tmp_path / "o").exists()


def test_expanded_runs_are_interleaved_over_seeds():
    from alphapo.experiments.runner import _interleave

    runs = expand_grid(parse_recipe(RECIPE, "r.yaml"))
    assert [r.seed for r in _interleave(runs)][:3] == [0, 1, 2]


@register_job("test_pid", params={"x": Param(0.0, float)})
def _pid_job(params, shared, out_dir):
    return {"metrics": {"pid": float(os.getpid()), "x": params["x"], "threads": float(os.environ["OMP_NUM_THREADS"])}}


def test_jobs_registered_in_an_importable_module_run_in_worker_processes(tmp_path):
    recipe = parse_recipe({"job": "test_pid", "seeds": [0, 1], "threads": 1,
                           "methods": {"m": {"grid": {"x": [1.0, 2.0]}}}}, "pid.yaml")
    summary = run_experiment(recipe, tmp_path, jobs=2, progress=False)
    pids = {r["metrics"]["pid"] for r in _results(tmp_path).values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # two spawned workers ran the four runs
    assert [row["metrics"]["x"]["mean"] for row in summary["rows"]] == [1.0, 2.0]
    assert {r["metrics"]["threads"] for r in _results(tmp_path).values()} == {1.0}


@register_job("test_dies", params={})
def _dying_job(params, shared, out_dir):
    if params["seed"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker killed from outside (out of memory, say)
    time.sleep(0.5)
    return {"metrics": {"score": 1.0}}


def test_a_worker_killed_midway_is_a_clear_error(tmp_path):
    recipe = parse_recipe({"job": "test_dies", "seeds": [0, 1], "methods": {"m": {}}}, "dies.yaml")
    with pytest.raises(UserError, match="a worker process died .* rerun the same command to resume"):
        run_experiment(recipe, tmp_path, jobs=2, progress=False)
    assert not (tmp_path / "results.csv").exists()
    assert not list(tmp_path.glob("runs/m/*/seed1/result.json"))


@register_stage("test_slow_stage", keys=())
def _slow_stage(params, shared, out_dir):
    time.sleep(2.0)  # long enough for the other worker to arrive while this one computes
    (out_dir / "data.txt").write_text(str(os.getpid()))
    return {"pid": os.getpid(), "path": str(out_dir / "data.txt")}


@register_job("test_uses_slow_stage", params={"x": Param(0.0, float)}, stages=("test_slow_stage",))
def _uses_slow_stage(params, shared, out_dir):
    stage = shared["test_slow_stage"]
    return {"metrics": {"stage_pid": float(stage["pid"]), "file_pid": float(Path(stage["path"]).read_text()),
                        "my_pid": float(os.getpid())}}


def test_parallel_runs_of_one_seed_wait_for_one_stage_computation(tmp_path):
    recipe = parse_recipe({"job": "test_uses_slow_stage", "seeds": [0],
                           "methods": {"m": {"grid": {"x": [1.0, 2.0]}}}}, "race.yaml")
    run_experiment(recipe, tmp_path, jobs=2, progress=False)
    log = (tmp_path / "shared" / "test_slow_stage" / "computed.log").read_text().splitlines()
    assert len(log) == 1  # computed once although both runs needed it at the same time
    metrics = [r["metrics"] for r in _results(tmp_path).values()]
    assert len({m["my_pid"] for m in metrics}) == 2  # the two runs ran in two processes at once
    assert {m["stage_pid"] for m in metrics} == {m["file_pid"] for m in metrics} == {json.loads(log[0])["pid"]}
