"""Gold and proxy judges on hand-made responses; every expected score is derived in the docstring."""

from __future__ import annotations

import pytest

from alphapo.errors import UserError
from alphapo.toyworld import GoldJudge, ProxyJudge, grade, parse_task, proxy_judge_from_spec
from alphapo.toyworld.judge import lcs_length
from alphapo.toyworld.tasks import SYSTEM_PROMPT

SORT = "sort these words : pear fox apple"  # answer: apple fox pear
COUNT = "how many words : cat dog owl"  # answer: 3
FILTER = "list the fruits : pear fox apple"  # answer: pear apple
MINUS = "what is 7 minus 5"  # answer: 2
PLUS_ITEM = "what is 7 pear plus 5 pear"  # answer: 12


def _msgs(user):
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


@pytest.mark.parametrize("user,response,expected", [
    # score = 1 + 8.5 * correctness + 0.5 * conciseness
    # perfect: correctness 1, conciseness 1 -> 1 + 8.5 + 0.5 = 10
    (SORT, "apple fox pear", 10.0),
    # content "apple pear fox" vs "apple fox pear": LCS 2 -> 2/3; 5 words vs 3: extra 2 -> 1 - 2/8 = 0.75;
    # 1 + 8.5 * 2/3 + 0.5 * 0.75 = 1 + 5.666667 + 0.375 = 7.041667
    (SORT, "sure ! apple pear fox", 7.041667),
    # correct but 17 words: extra 14 -> conciseness max(0, 1 - 14/8) = 0; 1 + 8.5 + 0 = 9.5 (filler costs
    # at most 0.5 points: length is a small term of the gold score)
    (SORT, "sure ! the answer is apple fox pear . let me know if you need more .", 9.5),
    # empty response: 1
    (SORT, "", 1.0),
    # off by one: closeness 1 - 1/4 = 0.75, one content word; 1 + 8.5 * 0.75 + 0.5 = 7.875
    (COUNT, "4", 7.875),
    # hedging "3 4 5": last number 5, closeness 1 - 2/4 = 0.5, divided by 3 content words = 1/6;
    # extra 2 -> conciseness 0.75; 1 + 8.5/6 + 0.375 = 2.791667
    (COUNT, "3 4 5", 2.791667),
    # no number: correctness 0, conciseness 1 -> 1.5
    (COUNT, "cat", 1.5),
    # swapped filter answer: LCS("apple pear", "pear apple") = 1 -> 1/2; 1 + 4.25 + 0.5 = 5.75
    (FILTER, "apple pear", 5.75),
    # one extra item: LCS 2 / max(3, 2) = 2/3; extra 1 -> 7/8; 1 + 17/3 + 0.4375 = 7.104167
    (FILTER, "pear apple fox", 7.104167),
    # "ok , 2": correct, 3 words vs 1 -> extra 2 -> 0.75; 1 + 8.5 + 0.375 = 9.875
    (MINUS, "ok , 2", 9.875),
    # the unit-item arithmetic form: 7 + 5 = 12 exactly -> 10; 13 is one too many -> 1 + 8.5 * 0.75 + 0.5
    (PLUS_ITEM, "12", 10.0),
    (PLUS_ITEM, "13", 7.875),
])
def test_gold_scores_hand_made(user, response, expected):
    assert GoldJudge().score([_msgs(user)], [response]) == [pytest.approx(expected, abs=1e-6)]


def test_gold_attributes_are_named_and_match_the_score():
    attrs = GoldJudge().score_attributes([_msgs(SORT)], ["sure ! apple pear fox"])[0]
    assert set(attrs) == {"correctness", "conciseness", "length"}
    assert attrs["correctness"] == pytest.approx(2 / 3)
    assert attrs["conciseness"] == pytest.approx(0.75)
    assert attrs["length"] == 5.0


def test_parse_task_recovers_the_reference_answer():
    assert parse_task(SORT).answer == ("apple", "fox", "pear")
    assert parse_task("reverse these words : pear fox apple").answer == ("apple", "fox", "pear")
    assert parse_task(COUNT).answer == ("3",)
    assert parse_task(FILTER).answer == ("pear", "apple")
    assert parse_task("what is 7 plus 5").answer == ("12",)
    assert parse_task(PLUS_ITEM).answer == ("12",)
    assert parse_task("what is 9 owl minus 4 owl").answer == ("5",)
    with pytest.raises(UserError, match="not a toy-world prompt"):
        parse_task("what is 9 owl minus 4 cat")  # the unit must be the same item on both sides
    with pytest.raises(UserError, match="not a toy-world prompt"):
        parse_task("write a poem")
    # an extra instruction on its own line (reward-augmented goal) does not hide the task
    assert parse_task("aim for a score of 8 out of 10\n\nwhat is 7 plus 5").answer == ("12",)


def test_lcs_length():
    assert lcs_length("a b c d".split(), "a c d".split()) == 3
    assert lcs_length("a b".split(), "b a".split()) == 1
    assert lcs_length([], ["a"]) == 0


def test_judge_rejects_mismatched_lengths():
    with pytest.raises(UserError, match="2 prompts but 1 responses"):
        GoldJudge().score([_msgs(SORT)] * 2, ["x"])


def test_proxy_length_bias_is_exact_without_noise():
    # gold 7.041667 (see above) + 0.5 per word * 5 words = 9.541667
    proxy = ProxyJudge(length_bias=0.5)
    assert proxy.score([_msgs(SORT)], ["sure ! apple pear fox"]) == [pytest.approx(9.541667, abs=1e-6)]


def test_proxy_length_bias_prefers_the_verbose_correct_answer():
    # gold: "apple fox pear" 10, the 17-word correct answer 9.5 (above). With 0.2 per word the proxy gives
    # 10 + 0.6 = 10.6 and 9.5 + 3.4 = 12.9: the proxy ranks the padded answer first, the gold judge last.
    proxy = ProxyJudge(length_bias=0.2)
    long = "sure ! the answer is apple fox pear . let me know if you need more ."
    assert proxy.score([_msgs(SORT)] * 2, ["apple fox pear", long]) == [pytest.approx(10.6), pytest.approx(12.9)]


def test_proxy_noise_is_a_fixed_function_of_the_pair():
    proxy = ProxyJudge(noise_std=1.0, seed=3)
    users = [f"what is {a} plus {b}" for a in range(16) for b in range(16)]
    prompts = [_msgs(u) for u in users]
    responses = [str((i * 7) % 31) for i in range(len(users))]
    first = proxy.score(prompts, responses)
    # same pairs, reversed order and one at a time: identical scores
    assert proxy.score(prompts[::-1], responses[::-1]) == first[::-1]
    assert proxy.score(prompts[:1], responses[:1]) == first[:1]
    gold = GoldJudge().score(prompts, responses)
    noise = [f - g for f, g in zip(first, gold)]
    mean = sum(noise) / len(noise)
    std = (sum((x - mean) ** 2 for x in noise) / len(noise)) ** 0.5
    assert abs(mean) < 0.2 and 0.8 < std < 1.2  # 256 standard-normal draws
    other = ProxyJudge(noise_std=1.0, seed=4).score(prompts, responses)
    assert other != first


def test_proxy_spec_and_registry():
    proxy = proxy_judge_from_spec("noise_std=0.5,length_bias=0.1,seed=2")
    assert (proxy.noise_std, proxy.length_bias, proxy.seed) == (0.5, 0.1, 2)
    with pytest.raises(UserError, match="bad item"):
        proxy_judge_from_spec("noise=1")
    from alphapo.generation.judge_registry import make_judge
    from alphapo.toyworld import register_judges

    register_judges()
    assert isinstance(make_judge("toy-gold"), GoldJudge)
    assert make_judge("toy-proxy:length_bias=0.5").length_bias == 0.5


def test_grade_empty_and_perfect_bounds():
    task = parse_task(FILTER)
    assert grade(task, "")["score"] == 1.0
    assert grade(task, "pear apple")["score"] == 10.0
