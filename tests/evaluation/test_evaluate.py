"""Head-to-head evaluation, goal-conditioned evaluation, the histogram figure and ``alphapo eval``."""

from __future__ import annotations

import json

import pytest

from alphapo.errors import UserError
from alphapo.evaluation.evaluate import evaluate_goal_conditioned, evaluate_model, judge_head_to_head
from alphapo.evaluation.logprobs import UnlearningResult
from alphapo.evaluation.plots import histogram_bins, plot_reward_histogram, plot_unlearning, unlearning_bars
from alphapo.generation.judges import BradleyTerryPairwise, FunctionJudge, LengthJudge

P = [{"role": "user", "content": "q"}]


def test_judge_head_to_head_hand_made():
    """Lengths: model [3, 2, 1, 4] vs reference [1, 2, 2, 1] -> win, tie, loss, win: (2 + 0.5) / 4."""
    res = judge_head_to_head(LengthJudge(), [P] * 4, ["aaa", "bb", "c", "dddd"], ["a", "bb", "cc", "d"],
                             lc_n_boot=0)
    s = res.summary()
    assert s["win_rate"] == 0.625 and (s["n_wins"], s["n_ties"], s["n_losses"]) == (2, 1, 1)
    assert s["mean_score"] == 2.5 and s["mean_reference_score"] == 1.5
    # paired score differences [2, 0, -1, 3]: mean 1.0; the bootstrap interval holds it
    assert s["score_gain"] == 1.0 and s["score_gain_ci"][0] <= 1.0 <= s["score_gain_ci"][1]
    assert s["mean_length"] == 2.5 and s["mean_reference_length"] == 1.5
    assert res.preferences == [1.0, 0.5, 0.0, 1.0]
    # precomputed reference scores are used as given (not re-judged)
    res2 = judge_head_to_head(LengthJudge(), [P] * 4, ["aaa", "bb", "c", "dddd"], ["a", "bb", "cc", "d"],
                              reference_scores=[0, 0, 0, 0], lc_n_boot=0)
    assert res2.win.win_rate == 1.0


def test_judge_head_to_head_pairwise_judge():
    """BT on lengths, scale 1: P = [s(2), s(0), s(-1)]; win rate = (0.880797 + 0.5 + 0.268941) / 3."""
    res = judge_head_to_head(BradleyTerryPairwise(LengthJudge()), [P] * 3, ["aaa", "b", "c"], ["a", "b", "cc"],
                             lc_n_boot=0)
    assert res.win.win_rate == pytest.approx((0.880797 + 0.5 + 0.268941) / 3, abs=1e-6)
    assert res.scores is None and res.summary()["mean_score"] is None


def test_evaluate_model_and_goal_conditioning(tiny_model_dir):
    from alphapo.generation.sampling import load_policy

    model, tok = load_policy(tiny_model_dir, device="cpu")
    prompts = [[{"role": "user", "content": "Sort: b a"}], [{"role": "user", "content": "Hi"}]]
    seen = []

    def judge_fn(prompt, response):
        seen.append(prompt)
        return float(len(response))

    judge = FunctionJudge(judge_fn)
    res = evaluate_model(model, tok, prompts, judge, reference=(model, tok), max_new_tokens=6, progress=False,
                         lc_n_boot=0)
    assert res.win.win_rate == 0.5 and res.win.n_ties == 2  # greedy, same model on both sides
    with pytest.raises(UserError, match="exactly one"):
        evaluate_model(model, tok, prompts, judge, max_new_tokens=6)

    def condition(prompt, goal):
        return [{"role": "system", "content": f"Overall score: {goal:g}"}] + prompt

    seen.clear()
    per_goal = evaluate_goal_conditioned(model, tok, prompts, judge, [10, 3], condition,
                                         reference_responses=res.reference_responses, max_new_tokens=6,
                                         progress=False, lc_n_boot=0)
    assert sorted(per_goal) == [3, 10] and per_goal[10].summary()["goal"] == 10
    assert all(p in prompts for p in seen)  # the judge always saw the original prompt, never the goal


def test_histogram_png(tmp_path):
    assert histogram_bins([1, 3, 10]).tolist()[:2] == [0.5, 1.5]  # integer scores: unit bins
    out = plot_reward_histogram({"SFT": [1, 2, 2, 3], "AlphaPO": [2.5, 3.5, 4.0]}, tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # no temporary file left behind


def test_eval_cli_end_to_end(tiny_model_dir, tmp_path):
    from alphapo.cli import main
    from alphapo.tiny_models import save_tiny_model

    other = save_tiny_model(tmp_path / "other", seed=3)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Sort: b a"}\n{"prompt": "Hi"}\n{"prompt": "What is 1 plus 2?"}\n')
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hi", "chosen": "Hello", "rejected": "Hey", "score_chosen": 9, '
                     '"score_rejected": 8}\n')
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(other), "--reference", str(tiny_model_dir), "--prompts", str(prompts),
               "--judge", "length", "--out", str(out), "--max-new-tokens", "6", "--no-progress",
               "--unlearning-data", str(pairs), "--temperature", "0.7", "--goals", "10,2"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("win_rate", "win_rate_ci", "lc_win_rate", "mean_score", "mean_length", "unlearning"):
        assert key in summary
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert summary["win_rate"] == pytest.approx(sum(r["preference"] for r in rows) / 3)
    assert sorted(p.name for p in out.iterdir()) == ["generations.jsonl", "rewards.png", "summary.json",
                                                     "unlearning.png"]
    assert sorted(summary["goals"]) == ["10", "2"] and summary["goals"]["2"]["goal"] == 2.0


def test_goal_condition_uses_the_relabel_goal_prompt(tiny_model_dir_no_system):
    """Same text as training; with a template lacking a system role, it prefixes the user turn."""
    from alphapo.data import relabel
    from alphapo.evaluation.evaluate import goal_condition
    from alphapo.generation.sampling import load_policy

    prompt = [{"role": "user", "content": "Hi"}]
    assert goal_condition()(prompt, 7) == relabel.goal_prompt(prompt, scores=7)
    assert goal_condition()(prompt, 7)[0]["role"] == "system"
    _, tok = load_policy(tiny_model_dir_no_system, device="cpu")
    conditioned = goal_condition(tok)(prompt, 7)
    assert len(conditioned) == 1 and conditioned[0]["content"].endswith("Overall score: 7.\n\nHi")


def test_unlearning_bars_and_figure(tmp_path):
    dpo = UnlearningResult(3, 7.0, -12.0, -9.0, -3.0, -2.0, -1.5, 1.0)
    ra = UnlearningResult(3, 7.0, -9.5, -9.0, -0.5, -1.6, -1.5, 0.67)
    assert unlearning_bars({"DPO": dpo, "RA": ra}, reference_name="SFT") == {"SFT": -9.0, "DPO": -12.0, "RA": -9.5}
    assert unlearning_bars({"DPO": dpo}, per_token=True) == {"reference": -1.5, "DPO": -2.0}
    other_ref = UnlearningResult(3, 7.0, -9.5, -8.0, -1.5, -1.6, -1.4, 0.67)
    with pytest.raises(UserError, match="same reference"):
        unlearning_bars({"DPO": dpo, "X": other_ref})
    out = plot_unlearning({"DPO": dpo, "RA": ra}, tmp_path / "u.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
