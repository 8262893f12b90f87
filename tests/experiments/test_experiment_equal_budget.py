"""``alphapo sweep`` with an equal search budget per method (``sweep.budget``) and tuning on a subset of the
seeds (``sweep.tune_seeds``), on the synthetic job's known objective (optimum alpha 0.25, gamma 0.5,
learning rate 1e-3)."""

from __future__ import annotations

import json
import statistics

import pytest

from alphapo.errors import UserError
from alphapo.experiments.recipe import parse_recipe
from alphapo.experiments.sweep import planned_points, run_sweep

RECIPE = {
    "job": "synthetic", "seeds": [0, 1, 2],
    "params": {"n_val": 20, "n_test": 20, "noise": 0.02, "seed_noise": 0.05},
    "methods": {
        # greedy from gamma 0.25, lr 5e-4 (both listed): 1 + 2 + 2 = 5 configurations
        "greedy": {"params": {"alpha": 0.0}, "search": "greedy",
                   "space": {"gamma": [0.25, 0.5, 1.0], "learning_rate": [5e-4, 1e-3, 3e-3]}},
        # a grid of 5
        "grid": {"params": {"alpha": 0.0, "learning_rate": 1e-3}, "search": "grid",
                 "space": {"gamma": [0.1, 0.25, 0.5, 1.0, 2.0]}},
        # a6 from greedy's choice: alpha 0 (not listed: +2), gamma (greedy's values all listed: +2) = 5;
        # learning_rate is greedy's choice, kept
        "a6": {"params": {"alpha": 0.0}, "start_from": "greedy", "search": "a6",
               "space": {"alpha": [0.1, 0.25], "gamma": [0.25, 0.5, 1.0]}},
    },
    "sweep": {"select": "val/score", "report": "test/score", "budget": 5, "tune_seeds": [1]},
}


def test_equal_budget_tuned_on_one_seed_reported_on_all(tmp_path):
    recipe = parse_recipe(RECIPE, "tuned.yaml")
    assert {m: planned_points(recipe, m) for m in recipe.methods} == {"greedy": 5, "grid": 5, "a6": 5}
    summary = run_sweep(recipe, tmp_path, jobs=2, progress=False)
    results = [json.loads(p.read_text()) for p in tmp_path.glob("runs/**/result.json")]
    # the search ran on seed 1 only: 5 configurations per method; then the 3 choices on seeds 0 and 2
    per_method = {m: {r["spec"]["config_hash"] for r in results if r["spec"]["method"] == m and r["spec"]["seed"] == 1}
                  for m in recipe.methods}
    assert {m: len(h) for m, h in per_method.items()} == {"greedy": 5, "grid": 5, "a6": 5}
    assert sorted(r["spec"]["seed"] for r in results) == [0] * 3 + [1] * 15 + [2] * 3
    assert {m: s["n_points"] for m, s in summary["methods"].items()} == {"greedy": 5, "grid": 5, "a6": 5}
    assert summary["budget"] == 5 and summary["tune_seeds"] == [1] and summary["seeds"] == [0, 1, 2]

    # the searches find the objective's optimum (noise 0.02 is far below the objective's steps)
    assert summary["methods"]["greedy"]["chosen_overrides"] == {"gamma": 0.5, "learning_rate": 1e-3}
    assert summary["methods"]["grid"]["chosen_overrides"] == {"gamma": 0.5}
    assert summary["methods"]["a6"]["chosen_overrides"] == {"alpha": 0.25, "gamma": 0.5, "learning_rate": 1e-3}
    for name, m in summary["methods"].items():
        chosen = [r for r in results if r["spec"]["method"] == name and r["spec"]["overrides"] == m["chosen_overrides"]]
        by_seed = {r["spec"]["seed"]: r["metrics"] for r in chosen}
        assert sorted(by_seed) == [0, 1, 2]
        assert m["select_mean"] == by_seed[1]["val/score"]  # selected on the tuning seed only
        assert m["report"]["per_seed"] == [by_seed[s]["test/score"] for s in (0, 1, 2)]  # reported on all
        assert m["report"]["mean"] == pytest.approx(statistics.mean(m["report"]["per_seed"]))
    assert "trained 5 configurations" in (tmp_path / "sweep.md").read_text()


@pytest.mark.parametrize("change, message", [
    (lambda r: r["methods"]["grid"]["space"].update(gamma=[0.1, 0.5]),
     r"budget is 5 configurations per method, but the searches train \{'grid': 2\}"),
    (lambda r: r["methods"]["a6"]["space"].update(gamma=[0.25, 2.0]),
     r"methods.a6.space.gamma: with sweep.budget, list all of greedy's values"),
    (lambda r: r["sweep"].update(tune_seeds=[3]), r"sweep.tune_seeds: \[3\] not in seeds"),
    (lambda r: r["sweep"].update(budget=0), r"sweep.budget: expected an integer >= 1"),
    (lambda r: r["sweep"].update(budjet=5), r"unknown key 'budjet'.*budget"),
])
def test_budget_and_tune_seeds_are_checked_before_anything_runs(tmp_path, change, message):
    recipe = json.loads(json.dumps(RECIPE))
    change(recipe)
    with pytest.raises(UserError, match=message):
        run_sweep(parse_recipe(recipe, "tuned.yaml"), tmp_path, jobs=1, progress=False)
    assert not (tmp_path / "runs").exists()
