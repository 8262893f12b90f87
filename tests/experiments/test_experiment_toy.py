"""The toy-world job on a very small setting: shared SFT/pairs/reference cache once per seed, and metrics
that are what the saved responses score."""

from __future__ import annotations

import json

import pytest

from alphapo.errors import UserError
from alphapo.experiments.recipe import parse_recipe
from alphapo.experiments.runner import run_experiment

TINY = {"n_train": 300, "n_heldout": 40, "sft_hidden_size": 16, "sft_layers": 1, "sft_heads": 2, "sft_kv_heads": 1,
        "sft_intermediate_size": 32, "sft_steps": 60, "sft_batch_size": 16, "sft_warmup_steps": 5,
        "n_pair_prompts": 48, "batch_size": 8, "n_val": 10, "n_test": 12}


@pytest.mark.slow
def test_toy_job_shares_stages_and_reports_what_it_measured(tmp_path):
    pytest.importorskip("alphapo.training.trainer")
    from alphapo.toyworld import GoldJudge
    from alphapo.toyworld.tasks import split_tasks

    recipe = parse_recipe({
        "job": "toy", "seeds": [0], "params": TINY,
        "methods": {"dpo": {"params": {"loss": "dpo", "beta": 0.3, "probe_size": 6, "probe_steps": 2},
                            "grid": {"learning_rate": [5e-4, 1e-3]}},
                    "simpo": {"params": {"loss": "simpo", "beta": 2.5, "gamma": 0.25}},
                    "alphapo": {"params": {"loss": "alphapo", "alpha": 0.5, "reference_kl": True,
                                           "probe_size": 6}}},
        "compare": {"metric": "test/gold_score", "pairs": [["simpo", "dpo"]]}}, "toy.yaml")
    summary = run_experiment(recipe, tmp_path, jobs=2, progress=False)
    assert summary["n_runs"] == 4 and len(summary["comparisons"]) == 2
    # SFT and pairs: one computation for the seed, shared by the three runs
    for stage in ("toy_sft", "toy_pairs"):
        assert len((tmp_path / "shared" / stage / "computed.log").read_text().splitlines()) == 1
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("runs/**/result.json"))]
    # the reference cache: computed by exactly one of the runs that need it (DPO, and AlphaPO for its
    # reference_kl diagnostic), read by the others; simpo needs none
    computed = {r["spec"]["config"]: r["metrics"]["train/reference_computed"] for r in results}
    assert computed["simpo"] == 0
    assert sorted(v for k, v in computed.items() if k != "simpo") == [0.0, 0.0, 1.0]
    assert len(list(tmp_path.glob("shared/toy_pairs/*/reference_cache/*.safetensors"))) == 1

    judge = GoldJudge()
    _, heldout = split_tasks(0, TINY["n_train"], TINY["n_heldout"])
    splits = {"val": heldout[:10], "test": heldout[10:22]}
    sft_eval = json.loads(next(tmp_path.glob("shared/toy_pairs/*/sft_eval.json")).read_text())
    for r in results:
        responses = json.loads(next(tmp_path.glob(f"runs/{r['spec']['method']}/*-{r['spec']['config_hash'][:10]}"
                                                 "/seed0/work/responses.json")).read_text())
        for split, tasks in splits.items():
            prompts = [t.messages() for t in tasks]
            scores = judge.score(prompts, responses[split])
            assert r["per_prompt"][f"{split}/gold_score"] == pytest.approx(scores)
            assert r["metrics"][f"{split}/gold_score"] == pytest.approx(sum(scores) / len(scores))
            # per-prompt win vs the SFT policy's greedy response: 1 / 0.5 / 0, and the win rate is their mean
            ref = sft_eval[split]["scores"]
            wins = [1.0 if s > q else 0.5 if s == q else 0.0 for s, q in zip(scores, ref)]
            assert r["per_prompt"][f"{split}/win"] == wins
            assert r["metrics"][f"{split}/win_rate"] == pytest.approx(sum(wins) / len(wins))
            assert r["metrics"][f"{split}/length"] == pytest.approx(
                sum(len(x.split()) for x in responses[split]) / len(tasks))
            # correctness per prompt, and its gain over the SFT policy's greedy response on the same prompt
            correct = [a["correctness"] for a in judge.score_attributes(prompts, responses[split])]
            sft_correct = [a["correctness"] for a in judge.score_attributes(prompts, sft_eval[split]["responses"])]
            assert r["per_prompt"][f"{split}/correctness"] == pytest.approx(correct)
            assert r["metrics"][f"{split}/correctness_gain"] == pytest.approx(
                (sum(correct) - sum(sft_correct)) / len(tasks))

    # diagnostics: KL only where the loss uses a reference or reference_kl asks for it; the probe set only
    # where probe_size is set, and it starts from the same SFT policy on the same pairs in every run
    by = {r["spec"]["config"]: r["metrics"] for r in results}
    assert "train/kl_seq_k1" not in by["simpo"] and not any(k.startswith("probe/") for k in by["simpo"])
    assert "train/kl_seq_k3" not in by["alphapo"]  # k3 is not an estimator on off-policy responses
    starts = []
    for r in results:
        m = r["metrics"]
        if r["spec"]["method"] == "simpo":
            continue
        assert m["probe/margin_lnorm"] == pytest.approx(m["probe/chosen_lnorm"] - m["probe/rejected_lnorm"])
        assert m["probe/margin_lnorm/q1"] <= m["probe/margin_lnorm/median"] <= m["probe/margin_lnorm/q3"]
        log = next(tmp_path.glob(f"runs/{r['spec']['method']}/*-{r['spec']['config_hash'][:10]}"
                                 "/seed0/work/train/metrics.jsonl")).read_text().splitlines()
        probes = [json.loads(line) for line in log if '"probe"' in line]
        assert probes[0]["step"] == 0 and probes[-1]["step"] == m["train/steps"]
        assert m["probe/chosen_lnorm_change"] == pytest.approx(
            probes[-1]["probe/chosen_lnorm"] - probes[0]["probe/chosen_lnorm"])
        starts.append((probes[0]["probe/chosen_lnorm"], probes[0]["probe/rejected_lnorm"]))
    assert len(starts) == 3 and all(s == pytest.approx(starts[0]) for s in starts)


def test_toy_job_checks_loss_parameters_and_sizes(tmp_path):
    pytest.importorskip("alphapo.training.trainer")
    from alphapo.experiments.registry import get_job
    from alphapo.experiments.toy import _eval_tasks, _loss_params

    defaults = {k: p.default for k, p in get_job("toy").params.items()}
    with pytest.raises(UserError, match="loss 'dpo' takes no 'alpha'"):
        _loss_params({**defaults, "loss": "dpo", "alpha": 0.25})
    assert _loss_params({**defaults, "loss": "alphapo", "alpha": 0.5}) == ({"alpha": 0.5}, False)
    assert _loss_params({**defaults, "loss": "dpo", "beta": 0.1}) == ({"beta": 0.1}, True)
    with pytest.raises(UserError, match="n_val \\+ n_test = 600 exceeds n_heldout = 500"):
        _eval_tasks({**defaults, "seed": 0, "n_val": 300, "n_test": 300})
    _, evals = _eval_tasks({**defaults, "seed": 0, "n_train": 10, "n_pair_prompts": 10, "n_heldout": 5,
                            "n_val": 2, "n_test": 3})
    assert [len(evals["val"]), len(evals["test"])] == [2, 3]
    assert not {t.user for t in evals["val"]} & {t.user for t in evals["test"]}
