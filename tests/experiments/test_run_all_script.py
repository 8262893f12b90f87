"""``recipes/run_all.sh`` (``make results`` / ``make results-quick``): every recipe of a folder, experiments
and sweeps, with one shared stage folder, and each recipe's wall time printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "recipes" / "run_all.sh"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALPHAPO": f"{sys.executable} -m alphapo.cli", "JOBS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_every_recipe_runs_with_one_shared_folder_and_its_wall_time(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    base = {"job": "synthetic", "seeds": [0, 1], "params": {"n_val": 4, "n_test": 3}}
    (recipes / "a.yaml").write_text(yaml.safe_dump({**base, "methods": {"simpo": {"params": {"alpha": 0.0}}}}))
    (recipes / "b.yaml").write_text(yaml.safe_dump({**base, "methods": {"alphapo": {"params": {"alpha": 0.25}}}}))
    (recipes / "c.yaml").write_text(yaml.safe_dump({
        **base, "methods": {"simpo": {"params": {"alpha": 0.0}, "search": "grid", "space": {"gamma": [0.25, 1.0]}}},
        "sweep": {"select": "val/score", "report": "test/score"}}))
    proc = _run("recipes", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name, command in (("a", "experiment"), ("b", "experiment"), ("c", "sweep")):
        assert any(re.fullmatch(rf"{name}: \d+ s \(alphapo {command} recipes/{name}.yaml, --jobs 1\)", x)
                   for x in lines), lines
    assert re.fullmatch(r"all 3 recipes: \d+ s", lines[-1])
    out = tmp_path / "out"
    assert (out / "a" / "results.md").is_file() and (out / "b" / "results.md").is_file()
    assert (out / "c" / "sweep.md").is_file()
    log = (out / "shared" / "synthetic_prompts" / "computed.log").read_text().splitlines()
    assert sorted(json.loads(x)["seed"] for x in log) == [0, 1]  # once per seed for the three recipes
    assert len((out / "wall_times.txt").read_text().splitlines()) == 4


def test_bad_arguments_exit_2(tmp_path):
    proc = _run("no_such_folder", "out", cwd=tmp_path)
    assert proc.returncode == 2 and "usage: recipes/run_all.sh" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _run("empty", "out", cwd=tmp_path)
    assert proc.returncode == 2 and "no *.yaml recipe in empty" in proc.stderr
