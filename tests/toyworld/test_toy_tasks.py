"""Task generation, the noisy teacher and the word-level tokenizer."""

from __future__ import annotations

import random

from alphapo.toyworld import GoldJudge, parse_task
from alphapo.toyworld.tasks import TASK_TYPES, make_tasks, split_tasks, teacher_response
from alphapo.toyworld.tokenizer import build_toy_tokenizer


def test_tasks_are_deterministic_and_mixed():
    a, b = make_tasks(50, seed=1), make_tasks(50, seed=1)
    assert a == b
    assert make_tasks(50, seed=2) != a
    assert {t.kind for t in a} == set(TASK_TYPES)
    assert [t.kind for t in a[:5]] == list(TASK_TYPES)  # balanced round-robin


def test_reference_answers_agree_with_the_judge_parser():
    for task in make_tasks(200, seed=0):
        assert parse_task(task.user).answer == task.answer, task


def test_split_is_disjoint():
    train, held = split_tasks(0, 500, 100)
    assert len(held) == 100
    assert not {t.user for t in train} & {t.user for t in held}


def test_noiseless_teacher_is_perfect_and_noisy_teacher_is_not():
    judge = GoldJudge()
    tasks = make_tasks(100, seed=0)
    rng = random.Random(0)
    clean = [teacher_response(t, rng, p_error=0.0, p_verbose=0.0) for t in tasks]
    assert judge.score([t.messages() for t in tasks], clean) == [10.0] * 100
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
