"""Every command and the Python example in docs/experiments.md work as written (run with --out moved
to a temporary folder), and the example recipes parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from alphapo.cli import main
from alphapo.experiments.recipe import load_recipe, parse_recipe
from alphapo.experiments.runner import run_experiment

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "experiments.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", DOC, flags=re.S)
COMMANDS = [line for lang, body in BLOCKS if lang == "bash" for line in body.splitlines()
            if line.startswith("alphapo ")]


def test_the_doc_shows_the_commands():
    assert [c.split()[1] for c in COMMANDS] == ["experiment", "sweep", "experiment"]


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if "toy" in c else c
                                     for c in COMMANDS])
def test_doc_command_runs(command, tmp_path, monkeypatch):
    argv = shlex.split(command)[1:]
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(tmp_path / out)
    monkeypatch.chdir(ROOT)
    assert main(argv + ["--no-progress"]) == 0
    produced = {"experiment": ["results.csv", "results.md", "comparisons.csv", "summary.json"],
                "sweep": ["sweep.json", "sweep.md", "sweep_comparisons.csv"]}[argv[0]]
    for name in produced:
        assert (tmp_path / out / name).stat().st_size > 0
    # a second invocation recomputes nothing and exits 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / out).rglob("result.json")}
    assert main(argv + ["--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / out).rglob("result.json")} == before


def test_doc_recipe_blocks_are_valid():
    import yaml

    for lang, body in BLOCKS:
        if lang == "yaml":
            parse_recipe(yaml.safe_load(body), "docs/experiments.md")


def test_example_recipes_parse():
    for path in sorted((ROOT / "src" / "alphapo" / "experiments" / "examples").glob("*.yaml")):
        load_recipe(path)


def test_doc_python_job_example(tmp_path):
    code = next(body for lang, body in BLOCKS if lang == "python")
    exec(compile(code, "docs/experiments.md", "exec"), {})
    recipe = parse_recipe({"job": "mine", "seeds": [0, 1], "methods": {"a": {"params": {"lr": 1e-3}},
                                                                        "b": {"params": {"lr": 2e-3}}}}, "x.yaml")
    summary = run_experiment(recipe, tmp_path, jobs=1, progress=False)
    means = {row["method"]: row["metrics"]["test/score"]["mean"] for row in summary["rows"]}
    assert means == {"a": pytest.approx(0.005), "b": pytest.approx(-1e-3 + 0.005)}
