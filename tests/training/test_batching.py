"""Batch planning: a pure function of (seed, epoch); length grouping cuts padding; splits cover the batch."""

from __future__ import annotations

import random

import pytest

from alphapo.training.data import layout_tokens, plan_epoch, split_global_batch, steps_per_epoch


def _padding(batches, lengths, micro):
    """Pad tokens when each micro-batch is padded to its longest member."""
    total = 0
    for b in batches:
        for m in split_global_batch(b, lengths, micro_batch=micro, process_index=0, num_processes=1):
            total += sum(max(lengths[i] for i in m) - lengths[i] for i in m)
    return total


def test_plan_is_a_deterministic_permutation():
    lengths = [random.Random(i).randint(5, 400) for i in range(103)]
    for group in (False, True):
        plan = plan_epoch(lengths, global_batch=8, seed=3, epoch=1, group_by_length=group)
        flat = [i for b in plan for i in b]
        assert sorted(flat) == list(range(103))  # every example exactly once, none dropped
        assert len(plan) == steps_per_epoch(103, 8) == 13 and len(plan[-1]) <= 8
        assert plan == plan_epoch(lengths, global_batch=8, seed=3, epoch=1, group_by_length=group)
        assert plan != plan_epoch(lengths, global_batch=8, seed=3, epoch=2, group_by_length=group)
        assert plan != plan_epoch(lengths, global_batch=8, seed=4, epoch=1, group_by_length=group)


def test_length_grouping_cuts_padding():
    lengths = [random.Random(i).randint(5, 400) for i in range(512)]
    grouped = plan_epoch(lengths, global_batch=8, seed=0, epoch=0, group_by_length=True)
    plain = plan_epoch(lengths, global_batch=8, seed=0, epoch=0, group_by_length=False)
    assert _padding(grouped, lengths, 2) < 0.25 * _padding(plain, lengths, 2)


def test_split_global_batch_covers_it_across_processes_and_micro_batches():
    lengths = list(range(100))
    batch = [5, 50, 7, 99, 3, 42, 11, 60]
    parts = [split_global_batch(batch, lengths, micro_batch=2, process_index=r, num_processes=2) for r in (0, 1)]
    # sorted by length: [99, 60], [50, 42], [11, 7], [5, 3], dealt round-robin to the 2 processes
    assert parts[0] == [[99, 60], [11, 7]] and parts[1] == [[50, 42], [5, 3]]
    assert sorted(i for p in parts for m in p for i in m) == sorted(batch)
    # the set of examples of a step does not depend on how it is split
    one = split_global_batch(batch, lengths, micro_batch=8, process_index=0, num_processes=1)
    assert sorted(one[0]) == sorted(batch)


def _pair(prompt: int, chosen: int, rejected: int) -> dict:
    return {"id": "x", "prompt_input_ids": [1] * prompt, "chosen_input_ids": [2] * chosen,
            "rejected_input_ids": [3] * rejected}


def test_layout_tokens_are_the_tokens_each_layout_encodes():
    """The batch length key, by hand. A pair (prompt 10, responses 4 and 6): prefix-shared 10 + 4 + 6 = 20,
    plain (prompt once per response) 2 x 10 + 4 + 6 = 30. A k = 4 example (prompt 7, responses 3, 5, 2,
    4): shared 7 + 14 = 21, plain 4 x 7 + 14 = 42. The shared value is the width of the example's own
    prefix-shared row (``shared_layout``), the plain one the sum of its ``prompt + response`` rows."""
    from alphapo.training.logps import plain_layout, shared_layout

    pair = _pair(10, 4, 6)
    multi = {"id": "m", "prompt_input_ids": [1] * 7, "responses_input_ids": [[2] * 3, [3] * 5, [4] * 2, [5] * 4],
             "scores": [1.0, 2.0, 3.0, 4.0]}
    assert [layout_tokens(pair, lay) for lay in ("shared", "packed", "plain")] == [20, 20, 30]
    assert [layout_tokens(multi, lay) for lay in ("shared", "packed", "plain")] == [21, 21, 42]
    for ex, responses in ((pair, [[2] * 4, [3] * 6]), (multi, multi["responses_input_ids"])):
        assert shared_layout([ex["prompt_input_ids"]], [responses], 0).processed_tokens == layout_tokens(ex, "shared")
        rows = plain_layout([ex["prompt_input_ids"]], [responses], 0)
        assert int(rows.attention_mask.sum()) == layout_tokens(ex, "plain")  # real tokens of the plain rows
    with pytest.raises(ValueError, match="layout must be one of shared, packed, plain, got 'pack'"):
        layout_tokens(pair, "pack")


def test_the_layout_key_orders_micro_batches_by_what_the_forward_costs():
    """A long prompt with short responses (30; 2, 2) costs 34 shared but 64 plain; a short prompt with
    long responses (5; 20, 20) costs 45 shared and 50 plain. Under prefix sharing the second is the longer
    one, so it leads the length-sorted micro-batches; the plain key would put the first one first."""
    examples = [_pair(30, 2, 2), _pair(5, 20, 20), _pair(3, 1, 1), _pair(4, 2, 1)]
    shared = [layout_tokens(e, "shared") for e in examples]
    plain = [layout_tokens(e, "plain") for e in examples]
    assert shared == [34, 45, 5, 7] and plain == [64, 50, 8, 11]
    split = dict(micro_batch=2, process_index=0, num_processes=1)
    assert split_global_batch([0, 1, 2, 3], shared, **split) == [[1, 0], [3, 2]]
    assert split_global_batch([0, 1, 2, 3], plain, **split) == [[0, 1], [3, 2]]


def test_eval_batches_per_rank_worked_examples():
    from alphapo.training.trainer import batches_per_rank

    assert batches_per_rank(5, batch_size=2, num_processes=2) == 2   # process 0 holds 3 examples
    assert batches_per_rank(4, batch_size=2, num_processes=2) == 1
    assert batches_per_rank(1, batch_size=8, num_processes=4) == 1   # three processes hold nothing
    assert batches_per_rank(17, batch_size=4, num_processes=8) == 1  # 3, 2, 2, ...
    assert batches_per_rank(33, batch_size=2, num_processes=8) == 3  # process 0 holds 5


@pytest.mark.parametrize("n", [1, 2, 5, 7, 16, 33])
@pytest.mark.parametrize("num_processes", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_eval_rank_batches_are_the_same_count_on_every_rank_and_cover_each_example_once(n, num_processes,
                                                                                       batch_size):
    """Under FSDP / ZeRO-3 each forward is a collective: every process must run the same number of them.
    The real batches, over all processes, hold each example exactly once (fillers are marked and dropped)."""
    from alphapo.training.trainer import batches_per_rank, rank_batches

    n_batches = batches_per_rank(n, batch_size=batch_size, num_processes=num_processes)
    per_rank = [rank_batches(list(range(r, n, num_processes)), batch_size=batch_size, n_batches=n_batches,
                             filler=0) for r in range(num_processes)]
    assert {len(b) for b in per_rank} == {n_batches}
    real = sorted(i for batches in per_rank for idx, ok in batches if ok for i in idx)
    assert real == list(range(n))
    assert all(idx == [0] for batches in per_rank for idx, ok in batches if not ok)
    assert all(len(idx) <= batch_size for batches in per_rank for idx, _ in batches)
    # the fullest process has no filler: n_batches is the least that fits every process
    assert min(sum(not ok for _, ok in batches) for batches in per_rank) == 0


def test_rank_batches_refuses_a_count_too_small():
    from alphapo.training.trainer import rank_batches

    with pytest.raises(ValueError, match="need more than 1 batches"):
        rank_batches([0, 1, 2], batch_size=2, n_batches=1, filler=0)
