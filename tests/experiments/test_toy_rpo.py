"""The toy job's RPO ablation axes: the learned reward model stage, k-response records, online rounds, and
that the defaults keep today's shared stages and offline training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphapo.errors import UserError

TINY = {"n_train": 300, "n_heldout": 40, "sft_hidden_size": 16, "sft_layers": 1, "sft_heads": 2, "sft_kv_heads": 1,
        "sft_intermediate_size": 32, "sft_steps": 60, "sft_batch_size": 16, "sft_warmup_steps": 5,
        "n_pair_prompts": 48, "batch_size": 8, "n_val": 10, "n_test": 12, "k": 4,
        "rm_n_train": 120, "rm_n_heldout": 40, "rm_steps": 20, "rm_hidden_size": 16}


def _defaults() -> dict:
    from alphapo.experiments.registry import get_job

    return {k: p.default for k, p in get_job("toy").params.items()}


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def test_defaults_keep_todays_shared_stages_and_offline_data():
    from alphapo.experiments.runner import _stage_key
    from alphapo.experiments.toy import _training_data

    p = _defaults()
    assert (p["pair_judge"], p["train_responses"], p["rounds"]) == ("gold", 2, 1)
    # the SFT and pair stages' folder keys of the default parameters, as computed before these parameters
    # existed: finished SFT policies and pair sets are found and reused
    assert _stage_key(("toy_sft",), p, 0) == "seed0-49831cf64b"
    assert _stage_key(("toy_sft", "toy_pairs"), p, 0) == "seed0-7a3d482991"
    shared = {"toy_pairs": {"pairs": "P/pairs.jsonl", "reference_cache": "P/reference_cache",
                            "responses": "P/responses.jsonl", "reference_cache_responses": "P/rc_responses",
                            "n_responses": 3},
              "toy_rm": {"used": False}}
    assert _training_data(p, shared) == ("P/pairs.jsonl", Path("P/reference_cache"))
    k5 = {**p, "train_responses": 5, "k": 5}
    assert _training_data(k5, shared) == ("P/responses.jsonl", Path("P/rc_responses"))
    # a pair stage folder from before k-response records, or one where no prompt kept all k samples
    old = {"toy_pairs": {"pairs": "P/pairs.jsonl", "reference_cache": "P/reference_cache"}}
    assert _training_data(p, old) == ("P/pairs.jsonl", Path("P/reference_cache"))
    with pytest.raises(UserError, match="shared pair stage P holds no k-response records"):
        _training_data(k5, old)
    with pytest.raises(UserError, match="no prompt of seed 0 has 5 non-empty samples"):
        _training_data({**k5, "seed": 0}, {"toy_pairs": {**shared["toy_pairs"], "n_responses": 0}})


def test_k_responses_need_a_k_response_loss_and_matching_k():
    from alphapo.experiments.toy import _loss_params

    p = _defaults()
    with pytest.raises(UserError, match="with train_responses: 2 the toy job trains on pairs"):
        _loss_params({**p, "loss": "rpo_sqr_all_pairs"})
    with pytest.raises(UserError, match="train_responses = 4 needs a k-response loss"):
        _loss_params({**p, "loss": "rpo_sqr", "train_responses": 4, "k": 4})
    with pytest.raises(UserError, match="but k = 5; set k: 4"):
        _loss_params({**p, "loss": "rpo_sqr_all_pairs", "train_responses": 4})
    # the all-pairs RPO forms use a reference model; rloo without a KL penalty does not
    assert _loss_params({**p, "loss": "rpo_sqr_all_pairs", "train_responses": 4, "k": 4}) == ({}, True)
    assert _loss_params({**p, "loss": "rloo", "train_responses": 4, "k": 4}) == ({}, False)


def test_round_plan_partitions_prompts_and_keeps_the_offline_step_budget():
    from alphapo.experiments.toy import round_plan

    # 3000 prompts -> 2950 pairs, batch 32, 2 epochs: offline 2 * ceil(2950 / 32) = 2 * 93 = 186 steps
    assert round_plan(3000, 3, 2950, 2, 32) == [(0, 1000, 62), (1000, 2000, 62), (2000, 3000, 62)]
    # 10 prompts in 3 rounds: 3, 3, 4 prompts; 9 records, batch 4, 1 epoch: 3 steps -> 1, 1, 1
    assert round_plan(10, 3, 9, 1, 4) == [(0, 3, 1), (3, 6, 1), (6, 10, 1)]
    # 7 steps over 3 rounds: the remainder goes to the first rounds
    assert round_plan(10, 3, 25, 1, 4) == [(0, 3, 3), (3, 6, 2), (6, 10, 2)]
    assert round_plan(10, 1, 9, 2, 4) == [(0, 10, 6)]
    with pytest.raises(UserError, match="rounds = 11 exceeds n_pair_prompts = 10"):
        round_plan(10, 11, 9, 1, 4)
    with pytest.raises(UserError, match="offline step budget \\(1 steps\\) is smaller than rounds = 2"):
        round_plan(10, 2, 3, 1, 4)


@pytest.fixture(scope="module")
def rpo_experiment(tmp_path_factory):
    """One tiny seed: offline DPO, online DPO (2 rounds), k = 4 all-pairs RPO, and DPO on reward-model pairs."""
    pytest.importorskip("alphapo.training.trainer")
    from alphapo.experiments.recipe import parse_recipe
    from alphapo.experiments.runner import run_experiment

    root = tmp_path_factory.mktemp("rpo")
    recipe = parse_recipe({
        "job": "toy", "seeds": [0], "params": {**TINY, "loss": "dpo", "beta": 0.3},
        "methods": {"offline": {}, "online": {"params": {"rounds": 2}},
                    "k4": {"params": {"loss": "rpo_sqr_all_pairs", "train_responses": 4}},
                    "rm": {"params": {"pair_judge": "rm"}}}}, "rpo.yaml")
    run_experiment(recipe, root, jobs=1, progress=False)
    results = {json.loads(p.read_text())["spec"]["method"]: json.loads(p.read_text())
               for p in root.glob("runs/**/result.json")}
    return root, results


def _run_dir(root: Path, result: dict) -> Path:
    return next(root.glob(f"runs/{result['spec']['method']}/*-{result['spec']['config_hash'][:10]}/seed0/work"))


@pytest.mark.slow
def test_k_response_records_hold_the_k_samples_with_their_judge_scores(rpo_experiment):
    from alphapo.toyworld import GoldJudge

    root, results = rpo_experiment
    gold_stage = json.loads(next(p for p in root.glob("shared/toy_pairs/*/stage.json")
                                 if json.loads(p.read_text())["params"]["pair_judge"] == "gold").read_text())
    samples = json.loads(Path(gold_stage["result"]["samples"]).read_text())
    records = _jsonl(gold_stage["result"]["responses"])
    assert gold_stage["result"]["n_responses"] == len(records)
    assert len(samples["responses"]) == TINY["n_pair_prompts"] and {len(r) for r in samples["responses"]} == {4}
    by_id = dict(zip(samples["ids"], samples["responses"]))
    judge = GoldJudge()
    for rec in records:
        texts = [m[0]["content"] for m in rec["responses"]]
        assert len(texts) == 4 and texts == by_id[rec["id"]]  # the k samples, in sampling order
        assert rec["scores"] == pytest.approx(judge.score([rec["prompt"]] * 4, texts))
        assert max(rec["scores"]) > min(rec["scores"])  # all-equal prompts carry no preference: dropped
    # the k = 4 run trained on those records: ceil(n / batch) steps of its one epoch, reference from SFT
    k4 = results["k4"]["metrics"]
    assert k4["train/steps"] == -(-len(records) // TINY["batch_size"])
    assert k4["train/reference_computed"] == 1.0
    assert len(list(Path(gold_stage["result"]["reference_cache_responses"]).glob("*.safetensors"))) == 1


@pytest.mark.slow
def test_reward_model_stage_ranks_the_samples_by_its_scores(rpo_experiment):
    from alphapo.generation.hf_judge import HFRewardJudge
    from alphapo.toyworld.reward_model import pair_accuracy

    root, results = rpo_experiment
    stages = [json.loads(p.read_text()) for p in root.glob("shared/toy_rm/*/stage.json")]
    used = [s["result"] for s in stages if s["result"]["used"]]
    assert len(used) == 1 and len(stages) == 2  # one no-op (gold runs), one reward model (the rm run)
    rm = used[0]
    summary = json.loads((Path(rm["model"]) / "reward_model_summary.json").read_text())
    assert rm["heldout_accuracy"] == summary["heldout_accuracy"] and 0.0 <= rm["heldout_accuracy"] <= 1.0
    # the rm stage ranks the gold-scored samples of its own pair stage, never ranked by gold itself
    rm_pairs_stage = next(json.loads(p.read_text())["result"] for p in root.glob("shared/toy_pairs/*/stage.json")
                          if json.loads(p.read_text())["params"]["pair_judge"] == "rm")
    assert "pairs" not in rm_pairs_stage
    samples = json.loads(Path(rm_pairs_stage["samples"]).read_text())
    pairs = _jsonl(rm["pairs"])
    judge = HFRewardJudge(rm["model"], batch_size=1, device="cpu", progress=False)
    chosen = judge.score([p["prompt"] for p in pairs], [p["chosen"][0]["content"] for p in pairs])
    rejected = judge.score([p["prompt"] for p in pairs], [p["rejected"][0]["content"] for p in pairs])
    # the explicit reward is the reward model's score, chosen = its highest-scored sample
    assert [p["score_chosen"] for p in pairs] == pytest.approx(chosen, abs=1e-4)
    assert [p["score_rejected"] for p in pairs] == pytest.approx(rejected, abs=1e-4)
    texts = {i: [t for t in r if t] for i, r in zip(samples["ids"], samples["responses"])}  # empty ones excluded
    prompts = dict(zip(samples["ids"], samples["prompts"]))
    for p, c, r in zip(pairs, chosen, rejected):
        scores = judge.score([prompts[p["id"]]] * len(texts[p["id"]]), texts[p["id"]])
        assert c > r and c == pytest.approx(max(scores), abs=1e-4) and r == pytest.approx(min(scores), abs=1e-4)
    gold = {(i, t): g for i, rs, gs in zip(samples["ids"], samples["responses"], samples["scores"])
            for t, g in zip(rs, gs)}
    assert rm["pairs_gold_agreement"] == pytest.approx(pair_accuracy(
        [gold[(p["id"], p["chosen"][0]["content"])] for p in pairs],
        [gold[(p["id"], p["rejected"][0]["content"])] for p in pairs]))
    assert results["rm"]["metrics"]["train/steps"] == -(-len(pairs) // TINY["batch_size"])


@pytest.mark.slow
def test_online_rounds_split_prompts_keep_steps_and_use_the_previous_policy_as_reference(rpo_experiment):
    from safetensors import safe_open

    root, results = rpo_experiment
    offline, online = results["offline"]["metrics"], results["online"]["metrics"]
    stage = json.loads(next(p for p in root.glob("shared/toy_pairs/*/stage.json")
                            if json.loads(p.read_text())["params"]["pair_judge"] == "gold").read_text())["result"]
    pairs = _jsonl(stage["pairs"])
    work = _run_dir(root, results["online"])
    # round 1: the shared SFT pairs of prompts 0..23; round 2: fresh samples on prompts 24..47
    r1, r2 = _jsonl(work / "round1" / "data.jsonl"), _jsonl(work / "round2" / "data.jsonl")
    assert r1 == [p for p in pairs if int(p["id"].rsplit("-", 1)[1]) < 24]
    assert {int(p["id"].rsplit("-", 1)[1]) for p in r2} <= set(range(24, 48))
    # the offline budget ceil(n_pairs / 8) steps, split over the two rounds (first round takes the remainder)
    total = -(-len(pairs) // TINY["batch_size"])
    assert offline["train/steps"] == online["train/steps"] == total
    assert (online["round1/steps"], online["round2/steps"]) == (total - total // 2, total // 2)
    assert (online["round1/records"], online["round2/records"]) == (len(r1), len(r2))
    # round 2's reference log-probs come from round 1's final policy, round 1's from the SFT policy
    sft = json.loads(next(root.glob("shared/toy_sft/*/stage.json")).read_text())["result"]["model"]
    refs = {}
    for r in (1, 2):
        (entry,) = (work / f"round{r}" / "reference_cache").glob("*.safetensors")
        with safe_open(str(entry), "pt") as fh:
            refs[r] = fh.metadata()["model"]
    assert refs == {1: sft, 2: str(work / "round1" / "train" / "final")}
    assert 0.0 <= online["round1/val_win_rate"] <= 1.0
    assert online["round2/val_win_rate"] == online["val/win_rate"]
