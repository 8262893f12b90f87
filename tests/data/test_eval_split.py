"""The eval split keeps relabeled twins (and pairs of one prompt) together, so eval is not memorisation."""

from __future__ import annotations

import pytest

from alphapo.data import tokenize_preferences
from alphapo.data.relabel import relabel
from alphapo.errors import UserError
from alphapo.training.data import split_eval

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731


def _pairs(n):
    return [{"id": f"p{i}", "prompt": [U(f"What is {i} plus {i}?")], "chosen": [A(f"{2 * i}")],
             "rejected": [A(f"{2 * i + 1}")], "chosen_score": 8.0, "rejected_score": 3.0} for i in range(n)]


def test_relabeled_twins_stay_on_one_side(tiny_tokenizer):
    out, _ = relabel(_pairs(12), mode="ra", placement="system")
    examples, _ = tokenize_preferences(out, tiny_tokenizer)
    assert len(examples) == 24 and len({e["group"] for e in examples}) == 12
    train, held = split_eval(examples, 0.25, seed=42)
    assert len(held) == 6 and len(train) == 18  # 0.25 x 24 = 6 = three whole source pairs
    source = lambda e: e["id"].split("/")[0]  # noqa: E731
    assert not {source(e) for e in train} & {source(e) for e in held}
    # the per-example split (no groups) puts some twins on both sides with this seed: the leak being fixed
    ungrouped = [{k: v for k, v in e.items() if k != "group"} for e in examples]
    train_u, held_u = split_eval(ungrouped, 0.25, seed=42)
    assert {source(e) for e in train_u} & {source(e) for e in held_u}


def test_pairs_of_one_prompt_stay_together_and_singletons_split_as_before(tiny_tokenizer):
    recs = _pairs(8)
    recs += [{**recs[0], "id": "p0-second", "rejected": [A("banana")]}]  # a second pair of prompt 0
    examples, _ = tokenize_preferences(recs, tiny_tokenizer)
    train, held = split_eval(examples, 0.3, seed=3)
    ids = lambda part: {e["id"] for e in part}  # noqa: E731
    assert {"p0", "p0-second"} <= ids(train) or {"p0", "p0-second"} <= ids(held)
    # singleton groups: exactly the old per-example split, randperm(n)[:round(fraction * n)] held out
    import torch

    single, _ = tokenize_preferences(_pairs(8), tiny_tokenizer)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(5)).tolist()
    _, held = split_eval(single, 0.25, seed=5)
    assert ids(held) == {f"p{i}" for i in perm[:2]}


def test_one_group_cannot_be_split(tiny_tokenizer):
    out, _ = relabel(_pairs(1), mode="ra", placement="system")
    examples, _ = tokenize_preferences(out, tiny_tokenizer)
    with pytest.raises(UserError, match="leaves no training examples out of 2"):
        split_eval(examples, 0.1, seed=0)
