"""Task generation, the noisy teacher and the word-level tokenizer."""

from __future__ import annotations

import random

import pytest

from alphapo.toyworld import GoldJudge, parse_task
from alphapo.toyworld.tasks import (
    ALL_TASK_TYPES,
    CONTENT_WORDS,
    TASK_TYPES,
    Task,
    make_tasks,
    split_tasks,
    systematic_error,
    teacher_response,
    validation_tasks,
)
from alphapo.toyworld.tokenizer import build_toy_tokenizer


def test_tasks_are_deterministic_and_mixed():
    a, b = make_tasks(50, seed=1), make_tasks(50, seed=1)
    assert a == b
    assert make_tasks(50, seed=2) != a
    assert {t.kind for t in a} == set(TASK_TYPES)
    assert [t.kind for t in a[:len(TASK_TYPES)]] == list(TASK_TYPES)  # balanced round-robin


def test_reference_answers_agree_with_the_judge_parser():
    for task in make_tasks(250, seed=0, kinds=ALL_TASK_TYPES):
        assert parse_task(task.user).answer == task.answer, task


def test_split_is_disjoint():
    train, held = split_tasks(0, 500, 100)
    assert len(held) == 100
    assert not {t.user for t in train} & {t.user for t in held}
    val = validation_tasks(0, 500, 100, 100)
    assert 90 <= len(val) <= 100
    assert not {t.user for t in val} & ({t.user for t in train} | {t.user for t in held})


def test_heldout_arithmetic_reuses_operand_pairs_seen_in_training():
    # the prompt names a unit item, so a held-out prompt is a new sentence but its operand pair (of the
    # 10 * 10 plus and 55 minus pairs) has almost always been trained on
    train, held = split_tasks(0, 4000, 2000)

    def operands(task):
        w = task.user.split()
        return (w[2], w[4], w[5])  # a, op, b of "what is a item op b item"

    seen = {operands(t) for t in train if t.kind == "arithmetic"}
    held_arith = [t for t in held if t.kind == "arithmetic"]
    assert len(held_arith) == 667  # round-robin of 3 kinds: indices 4001, 4004, ..., 5999
    assert sum(operands(t) in seen for t in held_arith) / len(held_arith) > 0.99


@pytest.mark.parametrize("user,mistake", [
    ("how many words : cat dog owl", ("4",)),  # one too many
    ("what is 7 pear plus 5 pear", ("13",)),  # one too many
    ("what is 7 pear minus 5 pear", ("3",)),
    ("sort these words : pear fox apple", ("apple", "pear", "fox")),  # last two swapped
    ("reverse these words : pear fox apple", ("pear", "fox", "apple")),  # not reversed
    ("list the fruits : pear fox apple owl", ("pear", "fox", "apple")),  # first non-fruit kept too
    ("list the fruits : fox pear", ("fox", "pear")),
])
def test_systematic_error_is_the_same_mistake_for_the_same_kind_of_prompt(user, mistake):
    task = parse_task(user)
    assert systematic_error(task) == mistake != task.answer


def test_teacher_mixes_systematic_and_random_errors_in_the_configured_shares():
    tasks = [t for t in make_tasks(3000, seed=0) if t.kind == "count"]  # 1000 count tasks (3 kinds round-robin)
    rng = random.Random(0)
    all_sys = [teacher_response(t, rng, p_error=1.0, p_systematic=1.0, p_verbose=0.0) for t in tasks]
    assert all_sys == [" ".join(systematic_error(t)) for t in tasks]
    responses = [teacher_response(t, rng, p_error=0.5, p_systematic=0.8, p_verbose=0.0) for t in tasks]
    right = sum(r == " ".join(t.answer) for t, r in zip(tasks, responses)) / len(tasks)
    sys_ = sum(r == " ".join(systematic_error(t)) for t, r in zip(tasks, responses)) / len(tasks)
    # expected: right 0.5; systematic 0.5 * 0.8 = 0.4, plus random "+1" corruptions 0.5 * 0.2 * 1/4 = 0.025.
    # 1000 draws: standard error <= 0.016, so 3 of them is < 0.05
    assert abs(right - 0.5) < 0.05 and abs(sys_ - 0.425) < 0.05
    with pytest.raises(ValueError, match="p_systematic must be in"):
        teacher_response(tasks[0], rng, p_systematic=1.5)


def test_filler_is_independent_of_correctness():
    tasks = make_tasks(2000, seed=1)
    rng = random.Random(1)
    rows = []
    for t in tasks:
        r = teacher_response(t, rng, p_error=0.5, p_systematic=0.8, p_verbose=0.5).split()
        content = [w for w in r if w in CONTENT_WORDS]
        rows.append((tuple(content) == t.answer, len(content) < len(r)))
    verbose_if_right = sum(v for ok, v in rows if ok) / sum(ok for ok, _ in rows)
    verbose_if_wrong = sum(v for ok, v in rows if not ok) / sum(not ok for ok, _ in rows)
    # both are estimates of p_verbose = 0.5 from ~1000 draws each (standard error ~0.016)
    assert abs(verbose_if_right - 0.5) < 0.05 and abs(verbose_if_wrong - 0.5) < 0.05


def test_noiseless_teacher_is_perfect_and_noisy_teacher_is_not():
    judge = GoldJudge()
    tasks = make_tasks(100, seed=0)
    rng = random.Random(0)
    clean = [teacher_response(t, rng, p_error=0.0, p_verbose=0.0) for t in tasks]
    assert judge.score([t.messages() for t in tasks], clean) == [10.0] * 100
    assert Task.from_record(tasks[0].to_record()) == tasks[0]
    wrong = [teacher_response(t, rng, p_error=1.0, p_verbose=0.0) for t in tasks]
    attrs = judge.score_attributes([t.messages() for t in tasks], wrong)
    assert all(a["correctness"] < 1.0 for a in attrs)
    verbose = [teacher_response(t, rng, p_error=0.0, p_verbose=1.0) for t in tasks]
    attrs = judge.score_attributes([t.messages() for t in tasks], verbose)
    assert all(a["correctness"] == 1.0 and a["conciseness"] < 1.0 for a in attrs)


def test_teacher_is_deterministic_given_the_rng():
    tasks = make_tasks(30, seed=0)
    r1 = [teacher_response(t, random.Random(5)) for t in tasks]
    r2 = [teacher_response(t, random.Random(5)) for t in tasks]
    assert r1 == r2


def test_tokenizer_covers_the_world_and_round_trips():
    tok = build_toy_tokenizer()
    unk = tok.unk_token_id
    rng = random.Random(0)
    for task in make_tasks(100, seed=3):
        response = teacher_response(task, rng)
        ids = tok(task.user + " " + response, add_special_tokens=False)["input_ids"]
        assert unk not in ids
        assert tok.decode(ids) == task.user + " " + response
    text = tok.apply_chat_template(make_tasks(1, seed=0)[0].messages(), tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|bos|><|system|>\n") and text.endswith("<|assistant|>\n")
