"""The toy job's ``eval_steps``: win rate against SFT and sampled KL(pi || pi_SFT) at intermediate steps
(AlphaPO Figures 10-11), without changing what is trained."""

from __future__ import annotations

import json

import pytest

from alphapo.experiments.recipe import parse_recipe
from alphapo.experiments.runner import run_experiment

TINY = {"n_train": 300, "n_heldout": 40, "sft_hidden_size": 16, "sft_layers": 1, "sft_heads": 2, "sft_kv_heads": 1,
        "sft_intermediate_size": 32, "sft_steps": 60, "sft_batch_size": 16, "sft_warmup_steps": 5,
        "n_pair_prompts": 48, "batch_size": 8, "n_val": 10, "n_test": 12, "epochs": 2,
        "loss": "alphapo", "alpha": 0.5, "learning_rate": 3e-3}


@pytest.mark.slow
def test_eval_steps_curve_and_bit_identical_training(tmp_path):
    pytest.importorskip("alphapo.training.trainer")
    from safetensors.torch import load_file

    recipe = parse_recipe({"job": "toy", "seeds": [0], "params": TINY,
                           "methods": {"plain": {}, "curve": {"params": {"eval_steps": 4, "eval_samples": 3}}}},
                          "t.yaml")
    run_experiment(recipe, tmp_path, jobs=1, progress=False)
    res = {json.loads(p.read_text())["spec"]["method"]: json.loads(p.read_text())
           for p in tmp_path.glob("runs/**/result.json")}
    plain, curve = res["plain"], res["curve"]
    folder = {m: tmp_path / "runs" / next(tmp_path.glob(f"runs/{m}/*")).relative_to(tmp_path / "runs") / "seed0"
              for m in res}

    # training is untouched: bit-identical final weights and identical per-step losses
    a = load_file(str(folder["plain"] / "work" / "train" / "final" / "model.safetensors"))
    b = load_file(str(folder["curve"] / "work" / "train" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    def losses(m):
        recs = [json.loads(x) for x in (folder[m] / "work" / "train" / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in recs if "loss" in r and r.get("split", "train") == "train"}

    # eval_steps a multiple of the toy job's logging interval (2): the same logging windows, same records
    assert losses("plain") == losses("curve") and len(losses("plain")) == 6
    for k in ("val/win_rate", "test/win_rate", "test/correctness_gain"):
        assert plain["metrics"][k] == curve["metrics"][k]
    assert "eval_curve" not in plain["extra"] and "val/kl_sft_k1" not in plain["metrics"]

    points = curve["extra"]["eval_curve"]
    steps_total = int(curve["metrics"]["train/steps"])
    assert [p["step"] for p in points] == [0, *range(4, steps_total, 4), steps_total]
    # step 0 is the SFT policy itself: KL exactly 0 and its greedy responses tie with themselves
    assert points[0]["kl_k1"] == 0.0 and points[0]["kl_k3"] == 0.0 and points[0]["win_rate"] == 0.5
    # the last point is the final policy: its win rate is the run's val/win_rate; the run reports its KL
    assert points[-1]["win_rate"] == curve["metrics"]["val/win_rate"]
    assert curve["metrics"]["val/kl_sft_k1"] == points[-1]["kl_k1"]
    assert curve["metrics"]["val/kl_sft_k3"] == points[-1]["kl_k3"]
    assert all(p["n_samples"] == 10 * 3 for p in points)
    assert all(p["kl_k3"] >= 0.0 for p in points)
    assert points[-1]["kl_k3"] > 0.0  # trained at a high rate: the policy moved
    assert not (folder["curve"] / "work" / "train" / "checkpoints").exists()  # deleted once evaluated
