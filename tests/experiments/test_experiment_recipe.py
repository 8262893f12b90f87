"""Recipe validation (unknown keys name the nearest key, ranges) and grid expansion."""

from __future__ import annotations

import re

import pytest

from alphapo.errors import UserError
from alphapo.experiments.recipe import expand_grid, load_recipe, parse_recipe

BASE = {"job": "synthetic", "seeds": [0, 1], "methods": {"simpo": {"params": {"alpha": 0.0}}}}


def _with(**changes):
    return {**BASE, **changes}


@pytest.mark.parametrize("data, message", [
    (_with(seed=[0]), "unknown key 'seed' (did you mean 'seeds'?)"),
    (_with(methods={"simpo": {"parms": {}}}), "methods.simpo: unknown key 'parms' (did you mean 'params'?)"),
    (_with(methods={"simpo": {"params": {"alhpa": 0.1}}}),
     "methods.simpo.params: unknown parameter 'alhpa' of job 'synthetic' (did you mean 'alpha'?)"),
    (_with(grid={"learning_rte": [1e-3]}), "unknown parameter 'learning_rte' of job 'synthetic' (did you mean "
                                           "'learning_rate'?)"),
    (_with(params={"learning_rate": 2.0}), "params.learning_rate: 2.0 is above the maximum 1.0"),
    (_with(params={"n_val": 0}), "params.n_val: 0 is below the minimum 1"),
    (_with(params={"n_val": 2.5}), "params.n_val: expected an integer"),
    (_with(grid={"gamma": [0.1, -1.0]}), "grid.gamma[1]: -1.0 is below the minimum 0.0"),
    (_with(grid={"gamma": []}), "grid.gamma: expected a non-empty list"),
    (_with(seeds=[0, 0]), "seeds: repeated seed"),
    (_with(seeds=[-1]), "seeds[0]: expected an integer >= 0"),
    (_with(seeds=[]), "seeds: expected a non-empty list"),
    (_with(threads=0), "threads: expected an integer >= 1"),
    (_with(job="synthtic"), "unknown job 'synthtic' (did you mean 'synthetic'?)"),
    (_with(params={"seed": 3}), "the seed is not a parameter"),
    (_with(compare={"metric": "test/score", "pairs": [["simpo", "alphpo"]]}),
     "compare.pairs[0]: no method 'alphpo'"),
    (_with(sweep={"select": "val/score", "report": "test/score", "mod": "max"}),
     "sweep: unknown key 'mod' (did you mean 'mode'?)"),
    (_with(sweep={"select": "test/score", "report": "test/score"}), "select on a validation metric"),
    ({"seeds": [0], "methods": {"a": {}}}, "missing required key 'job'"),
])
def test_bad_recipes_are_one_line_errors_naming_the_key(data, message):
    with pytest.raises(UserError, match=re.escape(message)) as info:
        parse_recipe(data, "r.yaml")
    assert str(info.value).startswith("r.yaml: ")
    assert "\n" not in str(info.value)


def test_grid_key_in_both_grids_is_an_error():
    data = _with(grid={"gamma": [0.1]}, methods={"simpo": {"grid": {"gamma": [0.2]}}})
    with pytest.raises(UserError, match=r"methods.simpo.grid: \['gamma'\] also in the top-level grid"):
        parse_recipe(data, "r.yaml")


def test_sweep_keys_are_refused_by_the_experiment_grid():
    recipe = parse_recipe(_with(methods={"a": {"search": "grid", "space": {"gamma": [0.1]}}}), "r.yaml")
    with pytest.raises(UserError, match="methods.a.search is a sweep key"):
        expand_grid(recipe)


def test_expansion_and_parameter_precedence():
    recipe = parse_recipe(_with(
        params={"alpha": 1.0, "gamma": 2.0, "n_val": 7},
        grid={"learning_rate": [1e-3, 1e-4]},
        methods={"simpo": {"params": {"alpha": 0.0}},
                 "alphapo": {"params": {"alpha": 0.25}, "grid": {"gamma": [0.1, 0.5, 1.0]}}}), "r.yaml")
    runs = expand_grid(recipe)
    # simpo: 2 lr x 2 seeds; alphapo: 2 lr x 3 gamma x 2 seeds
    assert len(runs) == 4 + 12
    assert len({r.rel_dir for r in runs}) == 16
    simpo = [r for r in runs if r.method == "simpo"]
    # defaults < recipe params < method params < grid values
    assert {r.params["alpha"] for r in simpo} == {0.0}
    assert {r.params["gamma"] for r in simpo} == {2.0}
    assert {r.params["n_val"] for r in runs} == {7}
    assert {r.params["n_test"] for r in runs} == {20}  # the job's default
    alphapo = [r for r in runs if r.method == "alphapo" and r.seed == 1]
    assert sorted((r.params["learning_rate"], r.params["gamma"]) for r in alphapo) == sorted(
        (lr, g) for lr in (1e-3, 1e-4) for g in (0.1, 0.5, 1.0))
    assert alphapo[0].config == "alphapo (learning_rate=0.001, gamma=0.1)"
    # the configuration hash covers every parameter: same configuration, same hash across seeds
    by_config = {}
    for r in runs:
        by_config.setdefault(r.config, set()).add(r.config_hash)
    assert all(len(h) == 1 for h in by_config.values()) and len(by_config) == 8


def test_load_recipe_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("job: synthetic\nseeds: [0]\nmethods: {a: {}}\nmetric: [x]\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown key 'metric' \(did you mean 'metrics'\?\)"):
        load_recipe(path)
    path.write_text("job: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_recipe(path)
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
