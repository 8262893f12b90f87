"""The losses contract (``alphapo.losses.contract``): registry, signatures, attributes, ranges, outputs, errors."""

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


def test_the_registry_is_built_from_each_loss_s_own_name():
    from alphapo.losses import registry

    assert all(loss.name == name for name, loss in LOSSES.items())
    with pytest.raises(ValueError, match="two losses are named 'dpo'"):
        registry(LOSSES["dpo"], LOSSES["dpo"])


def test_only_links_that_use_beta_take_it():
    """IPO's squared link is the only built-in link scaled by beta; the others do not take it."""
    from alphapo.losses import LINKS, Link

    assert {name for name, link in LINKS.items() if link.takes_beta} == {"squared"}
    for name, link in LINKS.items():
        assert ("beta" in inspect.signature(link.fn).parameters) == (name == "squared")

    # A user-defined link that takes beta still gets it: loss = z / beta with z = beta * (h_w - h_l) - gamma,
    # so at beta = 0.5, gamma = 0: (-1 - -3) = 2 exactly, and beta reaches the link.
    from alphapo.losses import compose

    per_beta = Link("per_beta", lambda z, *, beta: z / beta)
    loss = compose(link=per_beta)
    t = torch.tensor
    out = loss(chosen_logps=t([-1.0]), rejected_logps=t([-3.0]), ref_chosen_logps=t([0.0]),
               ref_rejected_logps=t([0.0]), beta=0.5)
    assert out.losses.item() == 2.0


def test_loss_inputs_come_from_declarations_never_from_a_call():
    """rloo needs the reference only with a KL penalty; nothing is learnt by calling the loss."""
    from alphapo.losses import loss_inputs

    rloo = LOSSES["rloo"]
    assert loss_inputs(rloo, {}) == ({"logps", "scores", "lengths", "ref_logps"}, {"scores"})
    assert not loss_inputs(rloo, {}).needs_reference and not loss_inputs(rloo, {"beta": 0.0}).needs_reference
    with_kl = loss_inputs(rloo, {"beta": 0.1})
    assert with_kl.required == {"scores", "ref_logps"} and with_kl.needs_reference
    assert loss_inputs(LOSSES["dpo"], {}).needs_reference and loss_inputs(LOSSES["rpo_multi"], {}).needs_reference
    assert not loss_inputs(LOSSES["alphapo"], {}).needs_reference
    # and rloo itself agrees: with beta != 0 and no ref_logps it names the missing input
    with pytest.raises(MissingInputError, match="ref_logps"):
        rloo(logps=torch.zeros(1, 2), scores=torch.zeros(1, 2), beta=0.1)

    def explodes(*, chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, beta=0.1):
        raise AssertionError("the loss must not be called to find its inputs")

    explodes.requires = frozenset({"ref_chosen_logps", "ref_rejected_logps"})
    spec = loss_inputs(explodes, {"beta": 0.3})
    assert spec.needs_reference and spec.accepted == {"chosen_logps", "rejected_logps", "ref_chosen_logps",
                                                      "ref_rejected_logps"}
    explodes.requires = frozenset()
    assert not loss_inputs(explodes, {}).needs_reference  # accepting a reference input is not needing it


def test_resolved_hyperparameters_fill_in_the_defaults_used():
    from alphapo.losses import resolve_hyperparameters

    assert resolve_hyperparameters(LOSSES["rpo_bwd"], {"beta": 0.2}) == {"beta": 0.2, "gamma": 0.0, "eta": 1.0}
    assert resolve_hyperparameters(LOSSES["alphapo"], {}) == {"beta": 2.5, "alpha": 0.25, "gamma": 0.25}
    assert resolve_hyperparameters(LOSSES["sft"], {}) == {}


@pytest.mark.parametrize("name, params, message", [
    ("dpo", {"beta": -0.1}, r"loss.beta=-0.1 is outside \(0, inf\).*rejected"),
    ("dpo", {"beta": 0}, r"loss.beta=0 is outside \(0, inf\)"),
    ("simpo", {"gamma": -0.5}, r"loss.gamma=-0.5 is outside \[0, inf\)"),
    ("simpo", {"beta": float("nan")}, r"loss.beta=nan is outside"),
    ("alphapo", {"alpha": float("inf")}, r"loss.alpha=inf is outside \(-inf, inf\)"),
    ("cdpo", {"eps": 0.5}, r"loss.eps=0.5 is outside \[0, 0.5\)"),
    ("robust", {"eps": -0.1}, r"loss.eps=-0.1 is outside \[0, 0.5\)"),
    ("exo_pair", {"eps": 0.0}, r"loss.eps=0.0 is outside \(0, 1\)"),
    ("discopop", {"tau": 0.0}, r"loss.tau=0.0 is outside \(0, inf\)"),
    ("rpo_sqr", {"eta": -1.0}, r"loss.eta=-1.0 is outside \(0, inf\)"),
    ("rpo_multi", {"eta": 0.0}, r"loss.eta=0.0 is outside \(0, inf\)"),
    ("cpo", {"nll_weight": -1.0}, r"loss.nll_weight=-1.0 is outside \[0, inf\)"),
    ("aot", {"eps": 0.7}, r"loss.eps=0.7 is outside \[0, 0.5\)"),
    ("nca_pair", {"beta": -1.0}, r"loss.beta=-1.0 is outside \(0, inf\)"),
    ("rloo", {"beta": -0.1}, r"loss.beta=-0.1 is outside \[0, inf\)"),
    ("dpo", {"beta": "big"}, r"loss.beta: expected a number for loss 'dpo', got 'big'"),
    ("dpo", {"beta": True}, r"loss.beta: expected a number"),
    ("simpo", {"gama": 1.0}, r"no hyper-parameter 'gama'; did you mean 'gamma'"),
])
def test_hyperparameters_outside_their_documented_range_are_errors(name, params, message):
    from alphapo.losses import HyperparameterError, resolve_hyperparameters

    with pytest.raises(HyperparameterError, match=message):
        resolve_hyperparameters(LOSSES[name], params)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_declares_the_range_of_beta_and_only_of_its_hyperparameters(name):
    from alphapo.losses import Interval, resolve_hyperparameters
    from alphapo.losses.contract import hyperparameters

    loss = LOSSES[name]
    assert set(loss.ranges) <= set(hyperparameters(loss))
    assert all(isinstance(r, Interval) for r in loss.ranges.values())
    if "beta" in hyperparameters(loss):
        assert "beta" in loss.ranges
    resolve_hyperparameters(loss, {})  # the defaults themselves are inside the declared ranges
    assert all(default in loss.ranges[k] for k, default in resolve_hyperparameters(loss, {}).items()
               if k in loss.ranges)


def test_interval_notation():
    from alphapo.losses import Interval

    half_open = Interval.parse("[0, 0.5)")
    assert 0 in half_open and 0.4999 in half_open and 0.5 not in half_open and -1e-12 not in half_open
    assert str(half_open) == "[0, 0.5)" and str(Interval.parse("(0, inf]")) == "(0, inf)"  # inf never included
    assert float("inf") not in Interval.parse("[-inf, inf]") and float("nan") not in Interval.parse("(-1, 1)")
    with pytest.raises(ValueError, match="not an interval"):
        Interval.parse("0..1")
