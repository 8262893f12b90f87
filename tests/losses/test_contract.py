"""The losses contract (``alphapo.losses``' module docstring): registry, signatures, attributes, outputs and errors."""

from __future__ import annotations

import inspect

import pytest
import torch

from alphapo.errors import UserError
from alphapo.losses import (
    LOSSES,
    TRL_CPO_LOSS_NAMES,
    TRL_DPO_LOSS_NAMES,
    LossOutput,
    MissingInputError,
    get_loss,
)

SHEET_NAMES = {"dpo", "cdpo", "robust", "hinge", "ipo", "simpo", "alphapo", "alphapo_ref", "simpo_ref", "cpo",
               "sppo_hard", "fdpo_alpha", "rpo_bwd", "rpo_fwd", "rpo_sqr"}
TRL_DPO = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
           "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
TRL_CPO = ["sigmoid", "hinge", "ipo", "simpo", "alphapo"]
PAIR_INPUTS = {"chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths", "ref_chosen_logps",
               "ref_rejected_logps", "chosen_scores", "rejected_scores", "chosen_nll"}


def pair_inputs(loss, b=4, seed=0, requires_grad=False):
    """Random but valid inputs for every input tensor ``loss`` accepts (``chosen_nll`` left to its default)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in inspect.signature(loss).parameters:
        if name in PAIR_INPUTS - {"chosen_nll"}:
            if name.endswith("lengths"):
                out[name] = torch.randint(1, 20, (b,), generator=g)
            else:
                out[name] = -torch.rand(b, generator=g, dtype=torch.float64) * 30
                out[name].requires_grad_(requires_grad and name in ("chosen_logps", "rejected_logps"))
    return out


def test_every_sheet_and_trl_name_is_registered():
    assert SHEET_NAMES <= set(LOSSES)
    assert sorted(TRL_DPO_LOSS_NAMES) == sorted(TRL_DPO) and sorted(TRL_CPO_LOSS_NAMES) == sorted(TRL_CPO)
    # one to one: distinct TRL names map to distinct losses that exist
    for table in (TRL_DPO_LOSS_NAMES, TRL_CPO_LOSS_NAMES):
        assert len(set(table.values())) == len(table) and set(table.values()) <= set(LOSSES)


def test_get_loss_returns_registered_and_unknown_lists_names():
    assert get_loss("alphapo") is LOSSES["alphapo"]
    with pytest.raises(UserError) as err:
        get_loss("alphappo")
    msg = str(err.value)
    assert "'alphapo'" in msg and "dpo" in msg and "rpo_sqr" in msg


@pytest.mark.parametrize("name", sorted(n for n, f in LOSSES.items() if not f.multi_response))
def test_pairwise_contract(name):
    loss = LOSSES[name]
    sig = inspect.signature(loss)
    kinds = {p.kind for p in sig.parameters.values()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}, "keyword-only, no **kwargs"
    assert isinstance(loss.requires, frozenset) and loss.requires <= set(sig.parameters)
    assert loss.multi_response is False
    assert {"chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths"} <= set(sig.parameters)
    inputs = pair_inputs(loss, requires_grad=True)
    out = loss(**inputs)
    assert isinstance(out, LossOutput)
    assert out.losses.shape == (4,) and out.chosen_rewards.shape == (4,) and out.rejected_rewards.shape == (4,)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert torch.isfinite(out.losses).all()
    out.losses.sum().backward()
    assert inputs["chosen_logps"].grad is not None and torch.isfinite(inputs["chosen_logps"].grad).all()
    # Every required input, when missing, gives an error that names it.
    for missing in loss.requires:
        bad = {k: v for k, v in inputs.items() if k != missing}
        with pytest.raises(MissingInputError, match=missing):
            loss(**bad)
    with pytest.raises(TypeError, match="not_a_param"):
        loss(**inputs, not_a_param=1.0)


def test_reference_inputs_only_where_used():
    """The trainer decides whether to run the reference model from the signature / ``requires``."""
    for name in ("simpo", "alphapo", "cpo", "cpo_simpo", "sft"):
        assert "ref_chosen_logps" not in inspect.signature(LOSSES[name]).parameters
    for name in ("dpo", "ipo", "alphapo_ref", "simpo_ref", "rpo_bwd", "sppo_hard"):
        assert {"ref_chosen_logps", "ref_rejected_logps"} <= LOSSES[name].requires


def test_length_normalised_losses_need_lengths():
    t = torch.tensor([-3.0])
    with pytest.raises(MissingInputError, match="chosen_lengths"):
        get_loss("simpo")(chosen_logps=t, rejected_logps=t)
    with pytest.raises(UserError, match="positive"):
        get_loss("simpo")(chosen_logps=t, rejected_logps=t, chosen_lengths=torch.tensor([0]),
                          rejected_lengths=torch.tensor([2]))


def test_mismatched_shapes_are_an_error():
    with pytest.raises(UserError, match="rejected_logps"):
        get_loss("simpo")(chosen_logps=torch.zeros(3), rejected_logps=torch.zeros(2),
                          chosen_lengths=torch.ones(3), rejected_lengths=torch.ones(3))


def test_losses_pickle_and_keep_their_values():
    """Composed losses are plain objects of module-level pieces, so they pickle (worker processes)."""
    import pickle

    for name, loss in LOSSES.items():
        clone = pickle.loads(pickle.dumps(loss))
        if not loss.multi_response:
            inputs = pair_inputs(loss, seed=3)
            assert torch.equal(clone(**inputs).losses, loss(**inputs).losses), name
