"""Reward shapes: how a response's (log-)likelihood becomes a scalar reward (the AlphaPO axis).

A shape maps ``u`` (the policy log-likelihood, or the log-ratio to the reference, optionally divided by
the length; see ``alphapo.losses.compose``) to a reward ``r(u)``:

| shape            | ``r(u)``                                   | note                                  |
|------------------|--------------------------------------------|---------------------------------------|
| ``log``          | ``beta * u``                               | DPO (u = log-ratio), SimPO (u = s)    |
| ``alpha``        | ``(beta/alpha) * (1 - exp(-alpha * u))``   | AlphaPO eq. (3); = ``log`` at alpha=0 |
| ``linear``       | ``beta * (exp(u) - 1)``                    | AlphaPO section 3.1; = alpha at -1    |
| ``inverse_linear``| ``beta * (1 - exp(-u))``                  | AlphaPO section 3.1; = alpha at +1    |

Each shape gives ``reward(u)`` (for logging) and ``difference(u_w, u_l)`` = ``r(u_w) - r(u_l)``, the
quantity every pairwise link consumes. The difference is computed directly (not as ``reward - reward``)
so that the alpha shape can factor out its larger exponential (see ``numerics.alpha_difference``).

Shapes are plain frozen dataclasses: a user-defined shape only needs ``name``, ``params`` (extra
hyper-parameters and their defaults, beyond ``beta``), ``reward`` and ``difference``; ``ranges`` is
optional. The alpha shape accepts any finite ``alpha`` (0 is the log shape, -1 linear, +1 inverse-linear).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from alphapo.losses.contract import Interval
from alphapo.losses.numerics import alpha_difference, alpha_reward

Tensor = torch.Tensor


@dataclass(frozen=True)
class RewardShape:
    """A reward shape ``r(u)`` and its pairwise difference ``r(u_w) - r(u_l)``.

    ``reward(u, *, beta, **params)`` and ``difference(u_w, u_l, *, beta, **params)`` take tensors of any
    (broadcastable) shape. ``params`` maps each extra hyper-parameter name to its default, ``ranges`` to
    its documented range (any finite value where none is given).
    """

    name: str
    reward: Callable[..., Tensor]
    difference: Callable[..., Tensor]
    params: dict[str, float] = field(default_factory=dict)
    doc: str = ""
    ranges: dict[str, Interval] = field(default_factory=dict)


def _log_reward(u: Tensor, *, beta: float) -> Tensor:
    return beta * u


def _log_difference(u_w: Tensor, u_l: Tensor, *, beta: float) -> Tensor:
    # beta * (u_w - u_l) rather than beta*u_w - beta*u_l: one rounding fewer, and the alpha shape at
    # alpha = 0 reproduces exactly this expression (bit-identical SimPO).
    return beta * (u_w - u_l)


def _linear_reward(u: Tensor, *, beta: float) -> Tensor:
    return alpha_reward(u, beta=beta, alpha=-1.0)


def _linear_difference(u_w: Tensor, u_l: Tensor, *, beta: float) -> Tensor:
    return alpha_difference(u_w, u_l, beta=beta, alpha=-1.0)


def _inverse_linear_reward(u: Tensor, *, beta: float) -> Tensor:
    return alpha_reward(u, beta=beta, alpha=1.0)


def _inverse_linear_difference(u_w: Tensor, u_l: Tensor, *, beta: float) -> Tensor:
    return alpha_difference(u_w, u_l, beta=beta, alpha=1.0)


LOG = RewardShape("log", _log_reward, _log_difference, {}, "r = beta * u")
ALPHA = RewardShape(
    "alpha", alpha_reward, alpha_difference, {"alpha": 0.25},
    "r = (beta/alpha) * (1 - exp(-alpha*u)), computed as beta*u*phi(-alpha*u) (AlphaPO eq. 3)",
)
LINEAR = RewardShape(
    "linear", _linear_reward, _linear_difference, {}, "r = beta * (exp(u) - 1) (alpha shape at alpha=-1)",
)
INVERSE_LINEAR = RewardShape(
    "inverse_linear", _inverse_linear_reward, _inverse_linear_difference, {},
    "r = beta * (1 - exp(-u)) (alpha shape at alpha=+1)",
)

SHAPES: dict[str, RewardShape] = {s.name: s for s in (LOG, ALPHA, LINEAR, INVERSE_LINEAR)}
"""Built-in reward shapes by name."""
