"""Fixtures for trainer tests: tiny preference data and (when needed) a hand-written fake loss registry.

``fake_losses`` swaps ``alphapo.losses.LOSSES`` for two small, hand-written losses (DPO and SimPO,
from their papers' formulas) so the loop can be tested independently of the losses package; tests of the real
registry use ``alphapo.losses`` directly.
"""

from __future__ import annotations

import json
import random

import pytest
import torch


@pytest.fixture
def fake_losses(monkeypatch):
    from fakes import REGISTRY as registry

    import alphapo.losses as losses_mod
    monkeypatch.setattr(losses_mod, "LOSSES", registry, raising=False)
    monkeypatch.setattr(losses_mod, "get_loss", lambda name: registry[name], raising=False)
    return registry


def write_pairs(path, n: int = 16, seed: int = 0, multi_k: int | None = None):
    """Synthetic preference pairs: chosen answers the arithmetic, rejected babbles (varied lengths)."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            prompt = f"What is {i} plus {i}?"
            good = f"The answer is {2 * i}."
            bad = "no " * rng.randint(1, 6)
            if multi_k:
                responses = [good, bad] + [f"maybe {rng.randint(0, 99)}" for _ in range(multi_k - 2)]
                row = {"prompt": prompt, "responses": responses,
                       "scores": [1.0, 0.0] + [round(rng.random() * 0.8 + 0.1, 3) for _ in range(multi_k - 2)]}
            else:
                row = {"prompt": prompt, "chosen": good, "rejected": bad,
                       "score_chosen": 8.0 + rng.random(), "score_rejected": 2.0 + rng.random()}
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def pairs_path(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl")


@pytest.fixture
def multi_path(tmp_path):
    return write_pairs(tmp_path / "multi.jsonl", multi_k=3)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path_factory, monkeypatch):
    """Point the default caches into pytest's temp folder, never the user's home.

    Tests that do not set ``reference.cache_dir`` would otherwise write the reference cache to
    ``~/.cache/alphapo`` (``$ALPHAPO_CACHE`` moves it), and matplotlib (plot tests) its font cache to
    ``~/.cache/matplotlib`` (``$MPLCONFIGDIR``). Subprocesses (launcher, resume runs) inherit both
    through ``os.environ``.
    """
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ALPHAPO_CACHE", str(base / "alphapo-cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(base / "matplotlib"))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; tiny models do not benefit from threads
    yield
    torch.set_num_threads(threads)
