"""The ``synthetic`` job: a fast, deterministic noisy objective of the hyper-parameters, for tests and demos.

No model is trained. A run's per-prompt score on prompt ``i`` of split ``s`` (``val`` or ``test``) is::

    score = f(alpha, gamma, beta, learning_rate) + d[seed, s, i] + u[seed] + e[seed, config, s, i]

    f = 1 - (alpha - 0.25)^2 - 0.5 (gamma - 0.5)^2 - 0.25 (log10(learning_rate) + 3)^2 - 0.1 ln(beta / 2.5)^2

``f`` is separable with its maximum 1 at alpha = 0.25, gamma = 0.5, learning_rate = 1e-3, beta = 2.5.
``d`` is a prompt difficulty (normal, sd 0.5), the same for every run of a seed: it comes from the shared
stage ``synthetic_prompts`` (computed once per seed), so runs of one seed are paired on the same prompts.
``u`` is a seed effect (normal, sd ``seed_noise``) shared by every configuration of the seed, like the
luck of a training seed; ``e`` is per-run noise (normal, sd ``noise``). The metrics are ``val/score`` and
``test/score`` (means over ``n_val`` and ``n_test`` prompts) and ``f`` itself (``objective``); the
per-prompt lists are under the same names. ``sleep`` seconds of waiting stand in for training time.
All randomness is ``random.Random`` seeded by strings, so every process computes the same numbers.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from alphapo.experiments.registry import Param, register_job, register_stage

__all__ = ["objective"]

OPTIMUM = {"alpha": 0.25, "gamma": 0.5, "learning_rate": 1e-3, "beta": 2.5}


def objective(alpha: float, gamma: float, learning_rate: float, beta: float) -> float:
    """The noise-free objective ``f`` of the module docstring."""
    return (1.0 - (alpha - 0.25) ** 2 - 0.5 * (gamma - 0.5) ** 2 - 0.25 * (math.log10(learning_rate) + 3.0) ** 2
            - 0.1 * math.log(beta / 2.5) ** 2)


@register_stage("synthetic_prompts", keys=("n_val", "n_test"))
def prompts_stage(params: dict, shared: dict, out_dir: Path) -> dict:
    """Prompt difficulties per split for one seed, written to ``prompts.json``."""
    seed = params["seed"]
    difficulty = {}
    for split, n in (("val", params["n_val"]), ("test", params["n_test"])):
        rng = random.Random(f"synthetic-prompts:{seed}:{split}")
        difficulty[split] = [rng.gauss(0.0, 0.5) for _ in range(n)]
    path = Path(out_dir) / "prompts.json"
    path.write_text(json.dumps(difficulty), encoding="utf-8")
    return {"path": str(path)}


@register_job("synthetic", stages=("synthetic_prompts",), help="fast deterministic noisy objective (tests, demos)",
              params={
                  "alpha": Param(0.0, float, low=-10.0, high=10.0),
                  "gamma": Param(0.25, float, low=0.0, high=100.0),
                  "beta": Param(2.5, float, low=1e-6, high=1e6),
                  "learning_rate": Param(5e-4, float, low=1e-12, high=1.0),
                  "n_val": Param(20, int, low=1, high=100_000),
                  "n_test": Param(20, int, low=1, high=100_000),
                  "noise": Param(0.1, float, low=0.0),
                  "seed_noise": Param(0.05, float, low=0.0),
                  "sleep": Param(0.0, float, low=0.0, high=3600.0),
              })
def synthetic_job(params: dict, shared: dict, out_dir: Path) -> dict:
    seed = params["seed"]
    difficulty = json.loads(Path(shared["synthetic_prompts"]["path"]).read_text(encoding="utf-8"))
    f = objective(params["alpha"], params["gamma"], params["learning_rate"], params["beta"])
    u = random.Random(f"synthetic-seed:{seed}").gauss(0.0, params["seed_noise"])
    config = json.dumps({k: v for k, v in params.items() if k not in ("sleep", "threads")}, sort_keys=True)
    if params["sleep"]:
        time.sleep(params["sleep"])
    metrics, per_prompt = {"objective": f}, {}
    for split in ("val", "test"):
        rng = random.Random(f"synthetic-noise:{config}:{split}")
        scores = [f + d + u + rng.gauss(0.0, params["noise"]) for d in difficulty[split]]
        per_prompt[f"{split}/score"] = scores
        metrics[f"{split}/score"] = sum(scores) / len(scores)
    return {"metrics": metrics, "per_prompt": per_prompt}
