"""``--shared-dir``: several experiments and sweeps share one folder of stages, so a seed's shared stage
(the toy job's SFT policy and pair set; here the synthetic job's prompt set) is computed once for all of
them, and only for the parameter values it reads."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from alphapo.cli import main
from alphapo.experiments.recipe import parse_recipe
from alphapo.experiments.runner import run_experiment
from alphapo.experiments.sweep import run_sweep


def _recipe(noise: float, n_val: int = 4) -> dict:
    # ``noise`` is read by the job only; ``n_val`` / ``n_test`` by the synthetic_prompts stage
    return {"job": "synthetic", "seeds": [0, 1], "params": {"n_val": n_val, "n_test": 3, "noise": noise},
            "methods": {"simpo": {"params": {"alpha": 0.0}}}}


def _log(shared: Path) -> list[dict]:
    return [json.loads(line) for line in (shared / "synthetic_prompts" / "computed.log").read_text().splitlines()]


def test_two_experiments_and_a_sweep_with_one_shared_dir_compute_each_seed_stage_once(tmp_path):
    shared = tmp_path / "shared"
    a = run_experiment(parse_recipe(_recipe(0.1), "a.yaml"), tmp_path / "a", jobs=1, progress=False,
                       shared_dir=shared)
    b = run_experiment(parse_recipe(_recipe(0.3), "b.yaml"), tmp_path / "b", jobs=2, progress=False,
                       shared_dir=shared)
    sweep = {**_recipe(0.2), "methods": {"simpo": {"params": {"alpha": 0.0}, "search": "grid",
                                                   "space": {"gamma": [0.25, 1.0]}}},
             "sweep": {"select": "val/score", "report": "test/score"}}
    run_sweep(parse_recipe(sweep, "s.yaml"), tmp_path / "s", jobs=1, progress=False, shared_dir=shared)
    assert sorted(e["seed"] for e in _log(shared)) == [0, 1]  # one computation per seed for all three
    assert not (tmp_path / "a" / "shared").exists() and not (tmp_path / "s" / "shared").exists()
    # the job parameter differs, so the results differ; the stage (the prompts) is the same object
    assert a["rows"][0]["metrics"]["test/score"]["mean"] != b["rows"][0]["metrics"]["test/score"]["mean"]
    stages = sorted(p.parent.name for p in (shared / "synthetic_prompts").glob("*/stage.json"))
    assert stages == sorted({e["key"] for e in _log(shared)}) and len(stages) == 2

    # a value the stage reads gives new stage folders (never a stage computed with other values)
    run_experiment(parse_recipe(_recipe(0.1, n_val=5), "c.yaml"), tmp_path / "c", jobs=1, progress=False,
                   shared_dir=shared)
    assert sorted(e["seed"] for e in _log(shared)) == [0, 0, 1, 1]


def test_default_shared_dir_is_out_shared_and_the_cli_takes_shared_dir(tmp_path):
    run_experiment(parse_recipe(_recipe(0.1), "a.yaml"), tmp_path / "a", jobs=1, progress=False)
    assert len(_log(tmp_path / "a" / "shared")) == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(0.3)))
    shared = tmp_path / "common"
    for out in ("x", "y"):
        assert main(["experiment", str(recipe), "--out", str(tmp_path / out), "--jobs", "1",
                     "--shared-dir", str(shared), "--no-progress"]) == 0
    assert sorted(e["seed"] for e in _log(shared)) == [0, 1]
    assert not (tmp_path / "x" / "shared").exists()
    # the same recipe in two folders: identical tables
    assert (tmp_path / "x" / "results.csv").read_text() == (tmp_path / "y" / "results.csv").read_text()
