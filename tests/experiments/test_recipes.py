"""The shipped recipes under recipes/: each parses under the strict validation (no training here), each
quick variant runs the same methods and loss hyper-parameters as its full recipe on a smaller world, the
method comparison uses the quickstart's validated hyper-parameters, and the alpha sweep covers the alpha
grid of the AlphaPO paper's figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphapo.experiments.recipe import expand_grid, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("**/*.yaml"))
FULL = sorted((ROOT / "recipes").glob("*.yaml"))
TRAINING_KEYS = ("loss", "beta", "gamma", "alpha", "learning_rate", "epochs", "batch_size", "pair_judge",
                 "reference_kl")
SWEEP_KEYS = ("space", "start_from", "search", "sweep")  # of a sweep recipe's methods


def test_there_are_recipes_and_each_full_one_has_a_quick_variant():
    assert {p.name for p in FULL} >= {"method_comparison.yaml", "alpha_sweep.yaml"}
    assert sorted(p.name for p in (ROOT / "recipes" / "quick").glob("*.yaml")) == sorted(p.name for p in FULL)


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_recipe_parses_and_expands(path):
    recipe = load_recipe(path)  # strict: unknown keys, types and ranges of every job parameter
    if recipe.sweep is not None:  # a search: its spaces and equal budgets are checked before it runs
        from alphapo.experiments.sweep import _validate

        _validate(recipe)
        command = "alphapo sweep"
    else:
        runs = expand_grid(recipe)
        assert len(runs) == len({r.rel_dir for r in runs}) > 0
        command = "alphapo experiment"
    # the command in the recipe's header comment names this very file
    header = [line for line in path.read_text().splitlines() if line.startswith("#   alphapo ")]
    assert len(header) == 1 and header[0].startswith(f"#   {command} {path.relative_to(ROOT)} ")


def _by_config(path: Path) -> dict[str, dict]:
    """{config label: params} of one seed's runs (a sweep: each method's starting point and its space)."""
    recipe = load_recipe(path)
    if recipe.sweep is not None:
        from alphapo.experiments.recipe import resolve_runs

        return {m: {**resolve_runs(recipe, m, {})[0].params, "space": spec.space, "start_from": spec.start_from,
                    "search": spec.search, "sweep": recipe.sweep} for m, spec in recipe.methods.items()}
    runs = expand_grid(recipe)
    first = runs[0].seed
    return {r.config: r.params for r in runs if r.seed == first}


@pytest.mark.parametrize("path", FULL, ids=[p.name for p in FULL])
def test_quick_variant_trains_what_the_full_recipe_trains(path):
    full, quick = _by_config(path), _by_config(ROOT / "recipes" / "quick" / path.name)
    assert list(full) == list(quick)
    for label in full:
        assert {k: full[label][k] for k in TRAINING_KEYS} == {k: quick[label][k] for k in TRAINING_KEYS}
        assert {k: full[label].get(k) for k in SWEEP_KEYS} == {k: quick[label].get(k) for k in SWEEP_KEYS}
    assert load_recipe(path).seeds == load_recipe(ROOT / "recipes" / "quick" / path.name).seeds
    # and it is smaller: fewer SFT steps, pair prompts and evaluation prompts
    some = next(iter(full))
    for key in ("sft_steps", "n_pair_prompts", "n_test"):
        assert quick[some][key] < full[some][key]


def test_method_comparison_uses_the_quickstarts_validated_settings():
    from alphapo.quickstart import METHODS, QuickstartConfig
    from alphapo.toyworld.sft import ToySFTConfig

    for name in ("method_comparison.yaml", "method_comparison_proxy.yaml"):
        configs = _by_config(ROOT / "recipes" / name)
        assert set(configs) == set(METHODS)
        for method, m in METHODS.items():
            p = configs[method]
            assert p["loss"] == m["loss"] and p["learning_rate"] == m["learning_rate"]
            assert {k: p[k] for k in m["params"]} == m["params"]
            assert {k for k in ("beta", "gamma", "alpha") if p[k] is not None} == set(m["params"])
        qs, sft = QuickstartConfig(), ToySFTConfig()
        assert (p["epochs"], p["batch_size"], p["k"], p["pair_temperature"], p["n_pair_prompts"]) == (
            qs.epochs, qs.batch_size, qs.k, qs.temperature, qs.n_pair_prompts)
        assert (p["n_train"], p["n_heldout"], p["sft_steps"], p["p_error"], p["p_verbose"]) == (
            sft.n_train, sft.n_heldout, sft.steps, sft.p_error, sft.p_verbose)
        assert len(load_recipe(ROOT / "recipes" / name).seeds) >= 3
    assert {_by_config(ROOT / "recipes" / n)["dpo"]["pair_judge"]
            for n in ("method_comparison.yaml", "method_comparison_proxy.yaml")} == {"gold", "proxy"}


def test_alpha_sweep_covers_the_papers_alpha_grid():
    configs = _by_config(ROOT / "recipes" / "alpha_sweep.yaml")
    assert sorted(p["alpha"] for p in configs.values()) == [-2, -1, -0.5, 0, 0.1, 0.25, 0.5, 1, 2]
    assert {p["loss"] for p in configs.values()} == {"alphapo"}
    # everything but alpha is the same in every configuration
    rest = [{k: v for k, v in p.items() if k != "alpha"} for p in configs.values()]
    assert all(r == rest[0] for r in rest)


RESULTS = (ROOT / "docs" / "RESULTS.md").read_text()


def test_results_commands_name_shipped_recipes():
    import re

    # the commands recipes/run_all.sh runs (make results): one shared stage folder, two jobs
    commands = re.findall(r"`alphapo (?:experiment|sweep) (\S+) --out (\S+) --shared-dir runs/shared --jobs 2`", RESULTS)
    assert {Path(p).name for p, _ in commands} == {path.name for path in RECIPES if path.parent.name == "recipes"}
    for recipe, out in commands:
        load_recipe(ROOT / recipe)
        assert out == f"runs/{Path(recipe).stem}"  # where run_all.sh writes it, under the ignored runs/
    # every shipped recipe is in RESULTS.md, run or "not yet run"
    for path in RECIPES:
        assert str(path.relative_to(ROOT)) in RESULTS


def test_results_snippet_computes_per_seed_paired_differences(tmp_path, monkeypatch, capsys):
    """The snippet of RESULTS.md on hand-made result files: per-seed differences 1, 2, 3 give mean 2 and
    the t-interval 2 +- t(0.975, 2) / sqrt(3) with t(0.975, 2) = 4.302653 (printed t-tables)."""
    import json
    import re

    code = re.search(r"```python\n(.*?)```", RESULTS, flags=re.S).group(1)
    out = tmp_path / "runs" / "alpha_sweep" / "runs"
    for seed, (a, b) in enumerate([(1.5, 0.5), (2.0, 0.0), (4.0, 1.0)]):
        for config, value in (("alphapo/alpha=2-0123456789", a), ("alpha0/default-0123456789", b)):
            d = out / config / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({"spec": {"seed": seed},
                                                       "metrics": {"probe/margin_lnorm/median": value}}))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/RESULTS.md", "exec"), {})
    mean, lo, hi = (float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", capsys.readouterr().out))
    half = 4.302653 / 3 ** 0.5
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half), abs=1e-5)
