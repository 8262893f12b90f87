"""Preference losses as pure functions: every loss of docs/papers.md, TRL 1.16's, and any combination.

What: each loss is a callable found by name in ``LOSSES`` (``get_loss(name)``). It takes keyword tensors
of shape ``(B,)`` (``chosen_logps``, ``rejected_logps`` summed over completion tokens,
``chosen_lengths``, ``rejected_lengths``, and where the loss needs them ``ref_chosen_logps``,
``ref_rejected_logps``, ``chosen_scores``, ``rejected_scores``, ``chosen_nll``) plus hyper-parameter
keywords, and returns a ``LossOutput`` with per-example ``.losses`` and detached ``.chosen_rewards`` /
``.rejected_rewards``. The caller reduces (``out.losses.mean()``). ``loss.requires`` names the inputs it
must get beyond the policy log-probs and lengths (``loss_inputs(loss, params)`` for given
hyper-parameters, e.g. whether the reference model must run), ``loss.ranges`` the documented range of
each hyper-parameter (``resolve_hyperparameters`` checks them), ``loss.multi_response`` says whether it
takes ``(B, k)`` tensors instead, and ``inspect.signature(loss)`` lists everything it accepts. The
contract is written out in ``alphapo.losses.contract``.

Why: preference losses differ along independent axes (reference model or not, length normalisation or
not, reward shape, link function), yet most libraries hard-code each combination behind flags. Here the
axes are pieces that ``compose`` combines, so any reward shape works with any link:

    >>> import torch
    >>> from alphapo.losses import compose, get_loss
    >>> lp = dict(chosen_logps=torch.tensor([-12.0]), rejected_logps=torch.tensor([-15.0]),
    ...           chosen_lengths=torch.tensor([6]), rejected_lengths=torch.tensor([5]))
    >>> get_loss("alphapo")(**lp, alpha=0.25, beta=2.5, gamma=0.25).losses        # AlphaPO eq. (4)
    >>> ipo_alpha = compose(shape="alpha", link="squared", normalize="mean", reference="ratio")
    >>> ipo_alpha(**lp, ref_chosen_logps=torch.tensor([-13.0]), ref_rejected_logps=torch.tensor([-14.0]),
    ...           beta=0.1, alpha=0.5).losses                                       # IPO on alpha rewards

Pieces (see ``compose``, ``shapes``, ``links``):

- reference: ``ratio`` (``logp - logp_ref``) | ``none`` (``logp``);
- normalize: ``sum`` | ``mean`` (divide by the completion length ``|y|``);
- shape: ``log`` | ``alpha`` | ``linear`` | ``inverse_linear`` (reward ``r(u)``);
- link: ``sigmoid`` | ``smoothed_sigmoid`` | ``robust`` | ``hinge`` | ``squared`` | ``exo`` |
  ``discopop`` | ``rpo_bwd`` | ``rpo_fwd`` | ``rpo_sqr`` (loss of ``z = r(w) - r(l) - gamma``).

Named losses: ``pairwise`` (DPO family, SimPO/AlphaPO, CPO family, RPO distances, TRL's DPO losses) and
``multi`` (``rpo_multi``, the all-pairs RPO forms, ``rloo``; ``(B, k)`` inputs). ``TRL_DPO_LOSS_NAMES``
and ``TRL_CPO_LOSS_NAMES`` map every TRL 1.16 ``loss_type`` to its name here. ``docs/papers.md`` is the
papers index (formula, paper and equation, TRL equivalent, deviations) for every entry.

Numerics (``numerics``): the alpha shape is ``beta*u*phi(-alpha*u)`` with ``phi(z) = expm1(z)/z``,
``phi(0) = 1``, so ``alpha = 0`` is the log shape bit for bit; reward gaps factor out the larger
exponential; exponents above ``MAX_EXPONENT = 60`` continue linearly, so losses and gradients are
finite for every finite input. bfloat16/float16 inputs are computed in float32.
"""

from __future__ import annotations

import difflib
from typing import Callable

from alphapo.errors import UserError
from alphapo.losses.compose import NORMALIZERS, REFERENCES, Normalizer, PairwiseLoss, Reference, compose
from alphapo.losses.contract import (
    LOSS_TENSOR_INPUTS,
    REFERENCE_INPUTS,
    HyperparameterError,
    Interval,
    LossInputs,
    LossOutput,
    MissingInputError,
    loss_inputs,
    registry,
    resolve_hyperparameters,
)
from alphapo.losses.links import LINKS, Link
from alphapo.losses.multi import MULTI_LOSSES, MultiResponseLoss, compose_multi
from alphapo.losses.numerics import MAX_EXPONENT
from alphapo.losses.pairwise import PAIRWISE_LOSSES, RunningMean
from alphapo.losses.shapes import SHAPES, RewardShape

LOSSES: dict[str, Callable[..., LossOutput]] = {**PAIRWISE_LOSSES, **MULTI_LOSSES}
"""Every loss by name. Pairwise losses take ``(B,)`` tensors; ``multi_response`` ones ``(B, k)``."""


TRL_DPO_LOSS_NAMES: dict[str, str] = {
    "sigmoid": "dpo", "hinge": "hinge", "ipo": "ipo", "exo_pair": "exo_pair", "nca_pair": "nca_pair",
    "robust": "robust", "bco_pair": "bco_pair", "sppo_hard": "sppo_hard", "aot": "aot",
    "aot_unpaired": "aot_unpaired", "apo_zero": "apo_zero", "apo_down": "apo_down", "discopop": "discopop",
    "sft": "sft", "sigmoid_norm": "sigmoid_norm",
}
"""TRL 1.16 ``DPOConfig.loss_type`` -> our loss name (one to one)."""

TRL_CPO_LOSS_NAMES: dict[str, str] = {
    "sigmoid": "cpo", "hinge": "cpo_hinge", "ipo": "cpo_ipo", "simpo": "cpo_simpo", "alphapo": "alphapo",
}
"""TRL 1.16 experimental ``CPOConfig.loss_type`` -> our loss name (one to one). TRL's ``alphapo`` forces
``cpo_alpha = 0`` (no NLL term); its ``simpo`` keeps the NLL term, hence ``cpo_simpo``."""


def get_loss(name: str) -> Callable[..., LossOutput]:
    """The loss called ``name``; an error listing the valid names (and the closest one) otherwise."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), LOSSES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown loss {name!r}.{hint} Valid losses: {', '.join(sorted(LOSSES))}") from None


__all__ = [
    "LINKS", "LOSSES", "LOSS_TENSOR_INPUTS", "MAX_EXPONENT", "MULTI_LOSSES", "NORMALIZERS", "PAIRWISE_LOSSES",
    "REFERENCES", "REFERENCE_INPUTS", "SHAPES", "TRL_CPO_LOSS_NAMES", "TRL_DPO_LOSS_NAMES",
    "HyperparameterError", "Interval", "Link", "LossInputs", "LossOutput", "MissingInputError",
    "MultiResponseLoss", "Normalizer", "PairwiseLoss", "Reference", "RewardShape", "RunningMean", "compose",
    "compose_multi", "get_loss", "loss_inputs", "registry", "resolve_hyperparameters",
]
