"""The ``toy_ra`` job (reward-augmented data, Zhang et al.) on a very small world: the UltraFeedback
binarization rule on hand examples, the goal text in toy-vocabulary words, the dataset stage's counts and
gold scores, the relabeled training sets' sizes per mode, the prompts the model is evaluated under, and a
tiny end-to-end run whose metrics are what its saved answers score."""

from __future__ import annotations

import json
import random

import pytest

from alphapo.errors import UserError
from alphapo.experiments import toy as toy_job_module
from alphapo.experiments import toy_ra
from alphapo.experiments.toy_ra import binarize, goal_messages, parse_numbers, score_words

TINY = {"n_train": 300, "n_heldout": 40, "sft_hidden_size": 16, "sft_layers": 1, "sft_heads": 2, "sft_kv_heads": 1,
        "sft_intermediate_size": 32, "sft_steps": 60, "sft_batch_size": 16, "sft_warmup_steps": 5,
        "n_pair_prompts": 40, "n_probe_prompts": 30, "probe_min_score": 9.0, "batch_size": 8, "n_val": 6,
        "n_test": 8, "n_control": 4, "control_goals": "3,10", "probe_steps": 2}


class _Recorder:
    """A stand-in ``random.Random`` whose ``choice`` records the candidates and takes the last one."""

    def __init__(self):
        self.seen = []

    def choice(self, items):
        self.seen.append(list(items))
        return items[-1]


def test_binarize_takes_the_best_and_a_random_strictly_worse_response():
    rng = _Recorder()
    # two responses share the top score 10: the first is chosen; the other 10 is no candidate for rejected
    assert binarize([7.0, 10.0, 9.5, 10.0], rng) == (1, 2)
    assert rng.seen == [[0, 2]]
    assert binarize([4.0, 4.0, 4.0], rng) is None and binarize([6.0], rng) is None  # no preference
    assert len(rng.seen) == 1  # a prompt without a pair draws nothing
    # the seeded draw: random.Random(0).choice([0, 2, 3]) is what the stage's generator would pick
    expected = random.Random(0).choice([0, 2, 3])
    assert binarize([1.0, 8.5, 2.0, 3.0], random.Random(0)) == (1, expected)


def test_score_words_and_the_goal_prompt_are_toy_vocabulary():
    from alphapo.data.relabel import goal_text
    from alphapo.toyworld.tasks import VOCABULARY, make_tasks

    assert [score_words(v) for v in (10, 9.875, 7.04, 9.95, 1, 5.25)] == ["10", "9 . 9", "7", "10", "1", "5 . 3"]
    with pytest.raises(UserError, match="cannot be written in toy-world words"):
        score_words(31)
    assert goal_text(9.875, toy_ra.GOAL_TEMPLATE, score_words) == "helpful : 9 . 9"
    task = make_tasks(1, seed=0)[0]
    messages = goal_messages(task.messages(), 9.875)
    assert messages[0]["content"] == "helpful : 9 . 9\n\n" + task.messages()[0]["content"]
    assert messages[1:] == task.messages()[1:]
    assert set(messages[0]["content"].split()) <= set(VOCABULARY)  # no unknown token for the toy tokenizer


def test_relabel_score_template_field():
    from alphapo.data.relabel import goal_text

    assert goal_text(8, "aim for {score}") == "aim for 8"
    assert goal_text({"overall": 7.5}, "aim for {score}") == "aim for 7.5"
    with pytest.raises(UserError, match="takes one overall score"):
        goal_text({"a": 1, "b": 2}, "aim for {score}")
    with pytest.raises(UserError, match="exactly once"):
        goal_text(8, "{score} and {scores}")


def test_parse_numbers_names_the_key():
    assert parse_numbers("0.1, 0.4,0.7", "teacher_errors", 0, 1) == [0.1, 0.4, 0.7]
    with pytest.raises(UserError, match="teacher_errors: 1.5 is outside"):
        parse_numbers("0.1,1.5", "teacher_errors", 0, 1)
    with pytest.raises(UserError, match="control_goals must be comma-separated numbers"):
        parse_numbers("high", "control_goals", 1, 10)


def test_sizes_are_checked_before_anything_runs():
    from alphapo.experiments.registry import get_job

    params = {k: p.default for k, p in get_job("toy_ra").params.items()}
    toy_ra._check_sizes(params, 3300)  # defaults: 3,000 pair + 300 probe prompts, 100 of 300 test prompts
    with pytest.raises(UserError, match="n_pair_prompts \\+ n_probe_prompts = 3300 exceeds the 3299 training"):
        toy_ra._check_sizes(params, 3299)
    with pytest.raises(UserError, match="n_control = 301 exceeds n_test = 300"):
        toy_ra._check_sizes({**params, "n_control": 301}, 3300)
    with pytest.raises(UserError, match="n_val \\+ n_test = 501 exceeds n_heldout = 500"):
        toy_ra._check_sizes({**params, "n_val": 201}, 3300)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny SFT policy and the dataset stage, computed once (seed 0)."""
    pytest.importorskip("alphapo.training.trainer")
    from alphapo.experiments.registry import get_job
    from alphapo.experiments.toy import sft_stage

    params = {**{k: p.default for k, p in get_job("toy_ra").params.items()}, **TINY, "seed": 0, "threads": 1}
    root = tmp_path_factory.mktemp("toy_ra")
    sft = sft_stage({k: params[k] for k in toy_ra.SFT_KEYS} | {"seed": 0, "threads": 1}, {}, root / "sft")
    data = toy_ra.data_stage({k: params[k] for k in toy_ra.DATA_KEYS} | {"seed": 0, "threads": 1},
                             {"toy_sft": sft}, root / "data")
    return params, {"toy_sft": sft, "toy_ra_data": data}


def _read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_data_stage_counts_and_gold_scores(world):
    from alphapo.toyworld import GoldJudge
    from alphapo.toyworld.tasks import split_tasks

    params, shared = world
    data = shared["toy_ra_data"]
    stats = data["stats"]
    pairs, probe = _read(data["pairs"]), _read(data["probe"])
    assert stats["sources"] == ["teacher_p0.1", "teacher_p0.4", "teacher_p0.7", "sft"]
    assert len(pairs) == stats["pairs"] == TINY["n_pair_prompts"] - stats["dropped"]
    train_tasks, _ = split_tasks(0, TINY["n_train"], TINY["n_heldout"])
    users = {t.user for t in train_tasks[:TINY["n_pair_prompts"]]}
    probe_users = {t.user for t in train_tasks[TINY["n_pair_prompts"]:TINY["n_pair_prompts"] + TINY["n_probe_prompts"]]}
    judge = GoldJudge()
    for rec in pairs + probe:
        gold = judge.score([rec["prompt"]] * 2, [rec["chosen"][0]["content"], rec["rejected"][0]["content"]])
        assert rec["gold_scores"] == pytest.approx(gold)
        assert [rec["chosen_score"], rec["rejected_score"]] == pytest.approx(gold)  # pair_judge: gold
        assert rec["chosen_score"] > rec["rejected_score"]  # strictly worse rejected
    assert {r["prompt"][-1]["content"] for r in pairs} <= users
    # the probe: held-out training prompts (in no pair), rejected responses of gold score >= 9 only
    assert {r["prompt"][-1]["content"] for r in probe} <= probe_users
    assert len(probe) == stats["probe_pairs"] > 0 and all(r["gold_scores"][1] >= 9.0 for r in probe)
    assert stats["probe_candidates"] >= stats["probe_pairs"]
    # the three noisy teachers are ordered by their error rates
    assert stats["gold/teacher_p0.1"] > stats["gold/teacher_p0.4"] > stats["gold/teacher_p0.7"]


def test_relabeled_training_sets_per_mode(world, tmp_path):
    """Counts derived from the pair file: a pair whose two scores read the same in toy words is a tie
    (dropped); ra gives 2 per kept pair, ra-chosen 1, half 2 per kept pair of the first N // 2."""
    params, shared = world
    pairs = _read(shared["toy_ra_data"]["pairs"])
    tie = [score_words(r["chosen_score"]) == score_words(r["rejected_score"]) for r in pairs]
    n, half = len(pairs), len(pairs) // 2
    expected = {"binarized": (n, 0, 0), "ra": (2 * (n - sum(tie)), sum(tie), 0),
                "ra-chosen": (n - sum(tie), sum(tie), 0),
                "half": (2 * (half - sum(tie[:half])), sum(tie[:half]), n - half)}
    for mode, (n_out, ties, unused) in expected.items():
        work = tmp_path / mode
        work.mkdir()
        path, counts = toy_ra.training_data({**params, "data": mode}, shared["toy_ra_data"]["pairs"], work)
        assert counts == {"data/pairs": n_out, "data/ties_dropped": ties, "data/not_used": unused}
        assert len(_read(path)) == n_out
    first = next(i for i, t in enumerate(tie) if not t)
    ra = _read(tmp_path / "ra" / "train_pairs.jsonl")
    pos, neg = ra[2 * sum(1 for t in tie[:first] if not t)], ra[2 * sum(1 for t in tie[:first] if not t) + 1]
    src = pairs[first]
    assert pos["prompt"][0]["content"].startswith(f"helpful : {score_words(src['chosen_score'])}\n\n")
    assert neg["prompt"][0]["content"].startswith(f"helpful : {score_words(src['rejected_score'])}\n\n")
    assert (pos["chosen"], neg["chosen"]) == (src["chosen"], src["rejected"])  # the negative goal swaps


@pytest.mark.slow
def test_toy_ra_end_to_end(tmp_path, monkeypatch):
    """Two runs (DPO on the binarized pairs, DPO on RA) through ``alphapo experiment`` in this process:
    the prompts each model answers (plain vs goal 10; goals 3 and 10 for the controllability table),
    metrics equal to what the saved answers score, and the probe curve's records."""
    from alphapo.experiments.recipe import parse_recipe
    from alphapo.experiments.runner import run_experiment
    from alphapo.toyworld import GoldJudge
    from alphapo.toyworld.tasks import split_tasks

    seen = []
    original = toy_ra._greedy

    def recording(model, tokenizer, prompts, params):
        seen.append([p[0]["content"] for p in prompts])
        return original(model, tokenizer, prompts, params)

    monkeypatch.setattr(toy_ra, "_greedy", recording)
    monkeypatch.setattr(toy_job_module, "_greedy", recording)  # toy.evaluate_split answers val and test
    recipe = parse_recipe({
        "job": "toy_ra", "seeds": [0], "params": TINY,
        "methods": {"dpo": {"params": {"loss": "dpo", "beta": 0.3, "data": "binarized"}},
                    "dpo_ra": {"params": {"loss": "dpo", "beta": 0.3, "data": "ra"}}},
        "compare": {"metric": "test/correctness", "pairs": [["dpo_ra", "dpo"]]}}, "ra.yaml")
    summary = run_experiment(recipe, tmp_path, jobs=1, progress=False)
    assert summary["n_runs"] == 2 and len(summary["comparisons"]) == 1

    plain = "you are a helpful assistant . answer correctly and concisely ."
    stage_calls, runs = seen[:2], [seen[2:6], seen[6:10]]  # the stage's SFT greedy answers: val, test
    assert all(set(c) == {plain} for c in stage_calls)
    by_data = {}
    for calls in runs:  # val, test, then goal 3 and goal 10 on the first n_control test prompts
        assert [len(c) for c in calls] == [6, 8, 4, 4]
        assert set(calls[2]) == {f"helpful : 3\n\n{plain}"} and set(calls[3]) == {f"helpful : 10\n\n{plain}"}
        by_data["ra" if calls[0][0] != plain else "binarized"] = calls
    assert set(by_data["binarized"][0]) == set(by_data["binarized"][1]) == {plain}
    assert set(by_data["ra"][0]) == set(by_data["ra"][1]) == {f"helpful : 10\n\n{plain}"}

    judge = GoldJudge()
    _, heldout = split_tasks(0, TINY["n_train"], TINY["n_heldout"])
    test_prompts = [t.messages() for t in heldout[6:14]]
    n_probe = len(_read(next(tmp_path.glob("shared/toy_ra_data/*/probe.jsonl"))))
    for path in sorted(tmp_path.glob("runs/*/*/seed0/result.json")):
        r = json.loads(path.read_text())
        m = r["metrics"]
        work = path.parent / "work"
        saved = json.loads((work / "responses.json").read_text())
        assert sorted(saved) == ["control/g10", "control/g3", "test", "val"]
        scores = judge.score(test_prompts, saved["test"])
        assert r["per_prompt"]["test/gold_score"] == pytest.approx(scores)
        assert m["test/gold_score"] == pytest.approx(sum(scores) / len(scores))
        for g in ("3", "10"):
            control = judge.score(test_prompts[:4], saved[f"control/g{g}"])
            assert m[f"control/g{g}/gold_score"] == pytest.approx(sum(control) / 4)
            assert m[f"control/g{g}/length"] == pytest.approx(sum(len(a.split()) for a in saved[f"control/g{g}"]) / 4)
        assert m["control/spread"] == pytest.approx(m["control/g10/gold_score"] - m["control/g3/gold_score"])
        assert not any(k.startswith("control/g") and k.split("/")[1] not in ("g3", "g10") for k in m)
        # the unlearning curve: every probe record covers the whole probe file; steps 0, 2, ... and the end
        probes = [json.loads(line) for line in (work / "train" / "metrics.jsonl").read_text().splitlines()
                  if '"probe"' in line]
        steps = int(m["train/steps"])
        assert [p["step"] for p in probes] == sorted(set(range(0, steps + 1, 2)) | {steps})
        assert {p["probe/size"] for p in probes} == {n_probe}
        assert m["probe/rejected_lnorm_change"] == pytest.approx(
            probes[-1]["probe/rejected_lnorm"] - probes[0]["probe/rejected_lnorm"])
        pairs = m["data/pairs"]
        assert m["train/steps"] == -(-pairs // TINY["batch_size"])  # one epoch: ceil(pairs / batch)


@pytest.mark.parametrize("folder", ["recipes", "recipes/quick"])
def test_reward_augmented_recipes_share_the_method_comparisons_sft_policy(folder):
    """Same ``toy_sft`` stage key as the method comparison of the same size: one SFT policy serves both."""
    from pathlib import Path

    from alphapo.experiments.recipe import expand_grid, load_recipe
    from alphapo.experiments.runner import _stage_key

    root = Path(__file__).resolve().parents[2] / folder
    ra = expand_grid(load_recipe(root / "reward_augmented.yaml"))
    mc = expand_grid(load_recipe(root / "method_comparison.yaml"))
    assert {r.seed for r in ra} == {r.seed for r in mc} == {0, 1, 2}
    keys = {_stage_key(["toy_sft"], r.params, r.seed) for r in ra}
    assert keys == {_stage_key(["toy_sft"], r.params, r.seed) for r in mc} and len(keys) == 3
