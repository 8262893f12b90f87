"""Batch planning: a pure function of (seed, epoch); length grouping cuts padding; splits cover the batch."""

from __future__ import annotations

import random

from alphapo.training.data import plan_epoch, split_global_batch, steps_per_epoch


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
