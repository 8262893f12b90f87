"""The pairing rule: best vs worst, ties dropped and counted, all-k mode (pure, no model)."""

from __future__ import annotations

import pytest

from alphapo.errors import UserError
from alphapo.generation.pairs import select_pairs

P = [{"role": "user", "content": "q"}]


def test_best_and_worst_with_tie_breaks():
    """Scores [2, 5, 5, 1, 1]: chosen = first max (index 1), rejected = first min (index 3)."""
    records, stats = select_pairs(["a"], [P], [["r0", "r1", "r2", "r3", "r4"]], [[2, 5, 5, 1, 1]])
    assert records == [{"id": "a", "prompt": P, "chosen": [{"role": "assistant", "content": "r1"}],
                        "rejected": [{"role": "assistant", "content": "r3"}],
                        "score_chosen": 5.0, "score_rejected": 1.0}]
    assert (stats.n_prompts, stats.n_kept, stats.n_dropped_all_equal, stats.n_responses) == (1, 1, 0, 5)
    assert stats.mean_score == pytest.approx(14 / 5)
    assert stats.mean_best_minus_worst == 4.0


def test_all_equal_prompts_are_dropped_and_counted():
    """Prompt b has all-equal scores -> dropped; spreads (4, 0, 0.5) average 1.5."""
    ids = ["a", "b", "c"]
    resp = [["x", "y"], ["x", "y"], ["u", "v"]]
    scores = [[1, 5], [3, 3], [0.5, 0.0]]
    records, stats = select_pairs(ids, [P] * 3, resp, scores)
    assert [r["id"] for r in records] == ["a", "c"]
    assert stats.n_dropped_all_equal == 1 and stats.n_kept == 2
    assert stats.mean_best_minus_worst == pytest.approx(1.5)
    assert records[1]["chosen"][0]["content"] == "u" and records[1]["rejected"][0]["content"] == "v"
    # with a tolerance, a spread of 0.5 also counts as a tie
    _, stats_tol = select_pairs(ids, [P] * 3, resp, scores, tie_tol=0.5)
    assert stats_tol.n_dropped_all_equal == 2 and stats_tol.n_kept == 1


def test_all_mode_keeps_every_response_with_scores():
    records, stats = select_pairs(["a", "b"], [P, P], [["x", "y", "z"], ["x", "y", "z"]],
                                  [[1, 2, 3], [7, 7, 7]], mode="all")
    assert records == [{"id": "a", "prompt": P,
                        "responses": [[{"role": "assistant", "content": t}] for t in "xyz"],
                        "scores": [1.0, 2.0, 3.0]}]
    assert stats.n_dropped_all_equal == 1


def test_bad_inputs():
    with pytest.raises(UserError, match="mode"):
        select_pairs(["a"], [P], [["x", "y"]], [[1, 2]], mode="best")
    with pytest.raises(UserError, match="differ in length"):
        select_pairs(["a", "b"], [P], [["x", "y"]], [[1, 2]])
    with pytest.raises(UserError, match="'a'.*2 responses and 1 scores"):
        select_pairs(["a"], [P], [["x", "y"]], [[1]])
    # NaN used to pass: max([nan, 1, 2]) is nan, so the "pair" depended on where the NaN sat
    with pytest.raises(UserError, match="'a'.*non-finite"):
        select_pairs(["a"], [P], [["x", "y", "z"]], [[float("nan"), 1, 2]])


def test_empty_responses_are_excluded_and_counted():
    """Prompt a: '' has the lowest score but is excluded -> rejected is 'y' (score 2).
    Prompt b: only one non-empty response -> dropped (empty). All mode: any empty response drops the prompt."""
    resp = [["x", "", "y"], ["", "z", ""]]
    scores = [[5, 1, 2], [1, 3, 1]]
    records, stats = select_pairs(["a", "b"], [P, P], resp, scores)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in records] == [("x", "y")]
    assert (stats.n_kept, stats.n_dropped_empty, stats.n_empty_responses, stats.n_dropped_all_equal) == (1, 1, 3, 0)
    kept, _ = select_pairs(["a", "b"], [P, P], resp, scores, empty_responses="keep")
    assert kept[0]["rejected"][0]["content"] == "" and len(kept) == 2
    _, stats_all = select_pairs(["a", "b"], [P, P], resp, scores, mode="all")
    assert stats_all.n_kept == 0 and stats_all.n_dropped_empty == 2


def test_identical_texts_share_one_score_and_never_pair_with_themselves():
    """'x' scored 1.0 and 1.000001 (batch noise) and nothing else: one distinct text -> no preference.
    Prompt b: 'x' scores (4, 2) -> mean 3 vs 'y' 1 -> chosen x (3), rejected y (1)."""
    records, stats = select_pairs(["a", "b"], [P, P], [["x", "x"], ["x", "y", "x"]],
                                  [[1.0, 1.000001], [4, 1, 2]])
    assert stats.n_dropped_all_equal == 1
    assert records == [{"id": "b", "prompt": P, "chosen": [{"role": "assistant", "content": "x"}],
                        "rejected": [{"role": "assistant", "content": "y"}],
                        "score_chosen": 3.0, "score_rejected": 1.0}]
    all_records, _ = select_pairs(["b"], [P], [["x", "y", "x"]], [[4, 1, 2]], mode="all")
    assert all_records[0]["scores"] == [3.0, 1.0, 3.0]
