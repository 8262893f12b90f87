"""Sweeps: grid and coordinate-wise greedy search (AlphaPO appendix A.6) on objectives whose answer is
known by hand; selection reads validation scores only."""

from __future__ import annotations

import json
import math

import pytest

from alphapo.errors import UserError
from alphapo.experiments.recipe import parse_recipe
from alphapo.experiments.registry import Param, register_job
from alphapo.experiments.stats import mean_ci
from alphapo.experiments.sweep import run_sweep, select_best

EVALUATED: list[tuple] = []  # (alpha, gamma, learning_rate, seed) in evaluation order (jobs=1 runs in-process)

PARAMS = {"alpha": Param(0.0, float), "gamma": Param(0.0, float), "learning_rate": Param(1e-4, float, low=0.0),
          "beta": Param(2.5, float)}


def _separable(a, g, lr):
    return -(a - 0.5) ** 2 - (g - 1.0) ** 2 - (math.log10(lr) + 3.0) ** 2


@register_job("test_separable", params=PARAMS)
def _separable_job(p, shared, out_dir):
    EVALUATED.append((p["alpha"], p["gamma"], p["learning_rate"], p["seed"]))
    val = _separable(p["alpha"], p["gamma"], p["learning_rate"]) + 0.01 * p["seed"]
    return {"metrics": {"val": val, "test": val - 0.1}}


# a coupled objective on {0, 1}^2 (alpha, gamma) where the coordinate order decides the greedy answer:
# from (0, 0), alpha first reaches (1, 0) = 1; gamma first reaches (0, 1) = 2, the grid optimum
COUPLED = {(0.0, 0.0): 0.0, (1.0, 0.0): 1.0, (0.0, 1.0): 2.0, (1.0, 1.0): 0.5}


@register_job("test_coupled", params=PARAMS)
def _coupled_job(p, shared, out_dir):
    val = COUPLED[(p["alpha"], p["gamma"])]
    return {"metrics": {"val": val, "test": val}}


# validation and test disagree: test is best where validation is worst
@register_job("test_val_test_disagree", params=PARAMS)
def _disagree_job(p, shared, out_dir):
    val = -(p["alpha"] - 0.25) ** 2 + 0.001 * p["seed"]
    return {"metrics": {"val": val, "test": 10 * (p["alpha"] - 0.25) ** 2 + p["seed"]}}


def _recipe(job, methods, seeds=(0,), **extra):
    return parse_recipe({"job": job, "seeds": list(seeds), "methods": methods,
                         "sweep": {"select": "val", "report": "test", **extra}}, "sweep.yaml")


def test_a6_tunes_alpha_then_gamma_then_learning_rate_keeping_the_best(tmp_path):
    EVALUATED.clear()
    # the space is written in another order: a6 still tunes alpha, then gamma, then the learning rate
    recipe = _recipe("test_separable", {"alphapo": {
        "params": {"alpha": 0.0, "gamma": 0.5, "learning_rate": 1e-4}, "search": "a6",
        "space": {"learning_rate": [1e-4, 1e-3, 1e-2], "gamma": [0.5, 1.0, 2.0], "alpha": [0.0, 0.25, 0.5, 1.0]}}},
        seeds=(0, 1))
    summary = run_sweep(recipe, tmp_path, jobs=1, progress=False)
    m = summary["methods"]["alphapo"]
    assert m["order"] == ["alpha", "gamma", "learning_rate"]
    assert [s["step"] for s in m["trace"]] == ["start", "alpha", "gamma", "learning_rate"]
    # the separable objective's argmax on the grid, by hand: alpha 0.5, gamma 1, learning rate 1e-3
    assert m["chosen_overrides"] == {"alpha": 0.5, "gamma": 1.0, "learning_rate": 1e-3}
    # evaluation order (seed 0): the start, then alpha moves with gamma/lr at the start, then gamma moves
    # with alpha at its best (0.5) and lr at the start, then lr with both at their best
    seen = []
    for a, g, lr, seed in EVALUATED:
        if seed == 0 and (a, g, lr) not in seen:
            seen.append((a, g, lr))
    assert seen == [(0.0, 0.5, 1e-4), (0.25, 0.5, 1e-4), (0.5, 0.5, 1e-4), (1.0, 0.5, 1e-4),
                    (0.5, 1.0, 1e-4), (0.5, 2.0, 1e-4), (0.5, 1.0, 1e-3), (0.5, 1.0, 1e-2)]
    assert m["n_points"] == 8 and len(EVALUATED) == 16  # no point run twice (2 seeds each)
    # select score: mean over seeds (0.00 and 0.01 offsets); report: test at the chosen point, with its CI
    assert m["select_mean"] == pytest.approx(0.005)
    assert m["report"]["per_seed"] == [pytest.approx(-0.1), pytest.approx(-0.09)]
    assert (m["report"]["mean"], m["report"]["ci_low"]) == pytest.approx(mean_ci([-0.1, -0.09])[:2])
    # the trace records each candidate's select score
    alpha_step = m["trace"][1]
    assert [c["value"] for c in alpha_step["candidates"]] == [0.0, 0.25, 0.5, 1.0]
    assert alpha_step["candidates"][3]["select"] == pytest.approx(
        _separable(1.0, 0.5, 1e-4) + 0.005)
    md = (tmp_path / "sweep.md").read_text()
    assert "tune `alpha` (0: " in md and "-> keep 0.5" in md
    assert json.loads((tmp_path / "sweep.json").read_text())["methods"]["alphapo"]["chosen_overrides"] == {
        "alpha": 0.5, "gamma": 1.0, "learning_rate": 0.001}


def test_greedy_order_matters_and_a6_fixes_it(tmp_path):
    space = {"gamma": [0.0, 1.0], "alpha": [0.0, 1.0]}  # written gamma first
    start = {"alpha": 0.0, "gamma": 0.0}
    recipe = _recipe("test_coupled", {
        "greedy": {"params": start, "search": "greedy", "space": space},  # gamma, then alpha
        "a6": {"params": start, "search": "a6", "space": space},  # alpha, then gamma
        "grid": {"params": start, "search": "grid", "space": space}})
    s = run_sweep(recipe, tmp_path, jobs=1, progress=False)["methods"]
    assert s["greedy"]["order"] == ["gamma", "alpha"]
    assert s["greedy"]["chosen_overrides"] == {"gamma": 1.0, "alpha": 0.0} and s["greedy"]["select_mean"] == 2.0
    assert s["a6"]["order"] == ["alpha", "gamma"]
    assert s["a6"]["chosen_overrides"] == {"alpha": 1.0, "gamma": 0.0} and s["a6"]["select_mean"] == 1.0
    assert s["grid"]["chosen_overrides"] == {"gamma": 1.0, "alpha": 0.0} and s["grid"]["n_points"] == 4


def test_selection_reads_validation_and_reports_test_at_the_chosen_point(tmp_path):
    recipe = _recipe("test_val_test_disagree", {"m": {
        "search": "grid", "space": {"alpha": [-1.0, 0.0, 0.25, 1.0]}}}, seeds=(0, 1, 2))
    m = run_sweep(recipe, tmp_path, jobs=1, progress=False)["methods"]["m"]
    assert m["chosen_overrides"] == {"alpha": 0.25}  # the validation argmax (test would pick alpha = -1)
    assert m["select_mean"] == pytest.approx(0.001)  # mean of seeds' 0, 0.001, 0.002
    # test at alpha = 0.25 is the seed: mean 1, t-interval of [0, 1, 2]
    assert m["report"]["per_seed"] == [0.0, 1.0, 2.0]
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert (m["report"]["ci_low"], m["report"]["ci_high"]) == (pytest.approx(1 - t2 / math.sqrt(3)),
                                                               pytest.approx(1 + t2 / math.sqrt(3)))


def test_select_best_sees_only_select_scores_and_keeps_ties_first():
    assert select_best([("a", 1.0), ("b", 2.0), ("c", 2.0)]) == 1
    assert select_best([("a", 1.0), ("b", float("nan")), ("c", 0.5)], "min") == 2
    assert select_best([("current", 1.0), ("other", 1.0)]) == 0  # a tie keeps the current value
    with pytest.raises(UserError, match="every candidate's select score is NaN"):
        select_best([("a", float("nan"))])


def test_start_from_begins_at_the_other_methods_choice(tmp_path):
    EVALUATED.clear()
    recipe = _recipe("test_separable", {
        "simpo": {"params": {"alpha": 0.0}, "search": "grid",
                  "space": {"gamma": [0.5, 1.0], "learning_rate": [1e-4, 1e-3]}},
        "alphapo": {"start_from": "simpo", "search": "a6", "space": {"alpha": [0.0, 0.5]}}})
    s = run_sweep(recipe, tmp_path, jobs=1, progress=False)["methods"]
    assert s["simpo"]["chosen_overrides"] == {"gamma": 1.0, "learning_rate": 1e-3}
    assert s["alphapo"]["trace"][0]["point"] == {"alpha": 0.0, "gamma": 1.0, "learning_rate": 1e-3}
    assert s["alphapo"]["chosen_overrides"] == {"alpha": 0.5, "gamma": 1.0, "learning_rate": 1e-3}
    assert s["alphapo"]["params"]["gamma"] == 1.0


def test_sweep_resumes_from_finished_runs(tmp_path):
    recipe = _recipe("test_separable", {"m": {"search": "greedy", "space": {"alpha": [0.0, 0.5]}}})
    EVALUATED.clear()
    first = run_sweep(recipe, tmp_path, jobs=1, progress=False)
    n = len(EVALUATED)
    again = run_sweep(recipe, tmp_path, jobs=1, progress=False)
    assert len(EVALUATED) == n == 2  # nothing re-run
    assert again["methods"] == first["methods"]


@pytest.mark.parametrize("methods, extra, message", [
    ({"m": {"space": {"alpha": [0.0]}}}, {}, "methods.m: missing 'search'"),
    ({"m": {"search": "greedy"}}, {}, "methods.m: missing 'space'"),
    ({"m": {"search": "a6", "space": {"beta": [1.0]}}}, {}, "the a6 search tunes only"),
    ({"m": {"search": "grid", "space": {"alpha": [0.0]}, "grid": {"gamma": [1.0]}}}, {}, "rename grid to space"),
    ({"m": {"search": "grdy", "space": {"alpha": [0.0]}}}, {}, "(did you mean 'greedy'?)"),
    ({"m": {"search": "grid", "space": {"alpha": [0.0]}}}, {"select": "vall"}, "reports no metric 'vall'"),
])
def test_bad_sweep_recipes(tmp_path, methods, extra, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        run_sweep(_recipe("test_separable", methods, **extra), tmp_path, jobs=1, progress=False)


def test_sweep_needs_a_sweep_section(tmp_path):
    recipe = parse_recipe({"job": "test_separable", "seeds": [0], "methods": {"m": {}}}, "plain.yaml")
    with pytest.raises(UserError, match="plain.yaml: no 'sweep' section"):
        run_sweep(recipe, tmp_path, jobs=1, progress=False)


@register_job("test_unset_start", params={"alpha": Param(None, float), "gamma": Param(0.0, float)})
def _unset_job(p, shared, out_dir):
    return {"metrics": {"val": 0.0, "test": 0.0}}


def test_greedy_needs_a_starting_value_for_each_coordinate(tmp_path):
    recipe = _recipe("test_unset_start", {"alphapo": {"search": "a6", "space": {"alpha": [0.0, 0.25]}}})
    with pytest.raises(UserError, match=r"methods.alphapo: the a6 search .* \['alpha'\] is unset there"):
        run_sweep(recipe, tmp_path, jobs=1, progress=False)
