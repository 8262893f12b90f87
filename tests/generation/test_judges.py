"""Judges: HF reward model vs a direct forward, noise / length-bias wrappers, pairwise adapters, registry."""

from __future__ import annotations

import math

import pytest

from alphapo.errors import UserError
from alphapo.generation.hf_judge import HFRewardJudge
from alphapo.generation.judge_registry import available_judges, make_judge, register_judge
from alphapo.generation.judges import (
    BradleyTerryPairwise,
    FunctionJudge,
    LengthBiasedJudge,
    LengthJudge,
    NoisyJudge,
    pairwise_scores,
    score_candidates,
    symmetric_compare,
)

P = [{"role": "user", "content": "Sort the words: banana apple"}]
P2 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 plus 7?"}]


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_hf_reward_judge_matches_direct_forward(tiny_reward_model_dir):
    """Batched, padded, length-sorted scoring equals one unpadded forward per conversation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts = [P, P2, P, P2, P]
    responses = ["apple banana", "The answer is 19.", "", "19", "banana apple cherry and a longer tail"]
    judge = HFRewardJudge(tiny_reward_model_dir, batch_size=2, device="cpu")
    got = judge.score(prompts, responses)

    tok = AutoTokenizer.from_pretrained(tiny_reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir).eval()
    want = []
    for p, r in zip(prompts, responses):
        text = tok.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert ids[0, 0].item() == tok.bos_token_id and (ids == tok.bos_token_id).sum() == 1  # one BOS
        with torch.no_grad():
            want.append(model(input_ids=ids).logits[0, 0].item())
    assert got == pytest.approx(want, abs=1e-5)
    assert max(want) - min(want) > 1e-2  # the check is not vacuous: scores differ


def test_hf_reward_judge_truncates_on_the_left_and_counts(tiny_reward_model_dir):
    """max_length=6 keeps the last 6 tokens (the response end) and counts the truncated inputs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    judge = HFRewardJudge(tiny_reward_model_dir, max_length=6, device="cpu")
    got = judge.score([P, P], ["apple banana cherry", "x"])
    tok = AutoTokenizer.from_pretrained(tiny_reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir).eval()
    text = tok.apply_chat_template(P + [{"role": "assistant", "content": "apple banana cherry"}], tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 6 and judge.n_truncated == 2
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids[-6:]])).logits[0, 0].item()
    assert got[0] == pytest.approx(want, abs=1e-5)


def test_hf_reward_judge_bad_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        HFRewardJudge(tmp_path / "missing")


def test_noisy_judge_is_a_fixed_function_of_the_pair():
    base = FunctionJudge(lambda p, r: 5.0)
    judge = NoisyJudge(base, std=1.0, seed=3)
    responses = [f"response {i}" for i in range(2000)]
    prompts = [P] * len(responses)
    a = judge.score(prompts, responses)
    b = judge.score(prompts[::-1], responses[::-1])[::-1]  # other order, same pairs
    assert a == b
    assert judge.score([P], [responses[7]]) == [a[7]]  # batch of one: same value
    assert NoisyJudge(base, std=1.0, seed=4).score(prompts[:5], responses[:5]) != a[:5]
    noise = [x - 5.0 for x in a]
    mean = sum(noise) / len(noise)
    sd = math.sqrt(sum((x - mean) ** 2 for x in noise) / (len(noise) - 1))
    # 2000 N(0,1) draws: mean within 4 standard errors (4/sqrt(2000) = 0.09), sd within 0.1
    assert abs(mean) < 0.09 and abs(sd - 1.0) < 0.1
    assert NoisyJudge(base, std=0.0).score(prompts[:3], responses[:3]) == [5.0] * 3
    clipped = NoisyJudge(base, std=10.0, seed=1, clip=(1.0, 10.0)).score(prompts, responses)
    assert min(clipped) == 1.0 and max(clipped) == 10.0


def test_length_biased_judge_hand_values():
    """base 1 + 0.5 * (len - 2): 'abcd' -> 1 + 0.5 * 2 = 2.0; '' -> 1 + 0.5 * (0 - 2) = 0.0."""
    judge = LengthBiasedJudge(FunctionJudge(lambda p, r: 1.0), 0.5, center=2.0)
    assert judge.score([P, P], ["abcd", ""]) == [2.0, 0.0]
    words = LengthBiasedJudge(LengthJudge(0.0), 1.0, length_fn=lambda r: len(r.split()))
    assert words.score([P], ["one two three"]) == [3.0]


def test_bradley_terry_pairwise():
    """sigmoid((3 - 1) / 2) = sigmoid(1) = 0.7310585786; equal scores give 0.5."""
    bt = BradleyTerryPairwise(LengthJudge(), scale=2.0)
    assert bt.compare([P, P], ["abc", "ab"], ["a", "xy"]) == pytest.approx([0.7310585786, 0.5])


def test_pairwise_scores_average_win_probability():
    """Scores [3, 1, 2] (lengths), BT scale 1.

    c0 = (s(2) + s(1)) / 2 = (0.880797 + 0.731059) / 2 = 0.805928
    c1 = (s(-2) + s(-1)) / 2 = 0.194072;   c2 = (s(-1) + s(1)) / 2 = 0.5
    """
    bt = BradleyTerryPairwise(LengthJudge())
    got = pairwise_scores(bt, [P, P2], [["aaa", "a", "aa"], ["x", "yy"]])
    assert got[0] == pytest.approx([0.805928, 0.194072, 0.5], abs=1e-6)
    assert got[1] == pytest.approx([_sig(-1), _sig(1)])
    # score_candidates dispatches on the judge kind
    assert score_candidates(bt, [P], [["aaa", "a", "aa"]])[0] == pytest.approx(got[0])
    assert score_candidates(LengthJudge(), [P, P2], [["aaa", "a"], ["x", "yy", ""]]) == [[3, 1], [1, 2, 0]]


def test_symmetric_compare_cancels_position_bias():
    class FirstPositionLover:
        def compare(self, prompts, a, b):
            return [0.7] * len(prompts)

    assert symmetric_compare(FirstPositionLover(), [P], ["x"], ["y"]) == [pytest.approx(0.5)]


def test_registry():
    assert isinstance(make_judge("length:2"), LengthJudge)
    assert make_judge("length:2").score([P], ["abc"]) == [6.0]
    with pytest.raises(UserError, match="known: .*hf"):
        make_judge("nope:x")
    with pytest.raises(UserError, match="hf:PATH"):
        make_judge("hf")
    register_judge("test-const", lambda arg: FunctionJudge(lambda p, r: float(arg or 0)), help="test")
    assert make_judge("test-const:4").score([P], ["x"]) == [4.0]
    assert "test-const" in available_judges()
    judge = make_judge("py:alphapo.generation.judges:LengthJudge")
    assert judge.score([P], ["ab"]) == [2.0]
    with pytest.raises(UserError, match="cannot load"):
        make_judge("py:alphapo.generation.judges:Missing")
    with pytest.raises(ValueError):
        register_judge("a:b", lambda arg: None)


def test_mismatched_lengths_raise():
    with pytest.raises(UserError, match="same length"):
        LengthJudge().score([P], ["a", "b"])


def test_no_progress_silences_the_judge_and_weight_loading_bars(tiny_reward_model_dir, capsys):
    import argparse

    from transformers.utils import logging as hf_logging

    from alphapo.generation.cli import add_judge_arguments, judge_from_args

    parser = argparse.ArgumentParser()
    add_judge_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")
    prompts, responses = [P] * 20, [f"answer {i}" for i in range(20)]  # 3 batches of 8: a bar is shown
    hf_logging.enable_progress_bar()
    try:
        errs = {}
        for flags in ([], ["--no-progress"]):
            judge = judge_from_args(parser.parse_args(["--judge", f"hf:{tiny_reward_model_dir}", *flags]))
            judge.score(prompts, responses)
            errs[bool(flags)] = capsys.readouterr().err
    finally:
        hf_logging.enable_progress_bar()
    assert "judge" in errs[False] and "Loading weights" in errs[False]  # the bars exist...
    assert errs[True] == ""  # ...and --no-progress turns every one of them off
