"""Pairwise links: from the reward gap ``z = r(w) - r(l) - gamma`` to a per-example loss.

Every link is a function ``fn(z, **params)`` (plus ``score_gap`` for the RPO links) on tensors of any
shape, with its hyper-parameters and defaults in ``params`` and their documented ranges in ``ranges``.
Only a link that uses ``beta`` takes it (``squared``, whose loss is scaled by ``1/beta``); the composed
loss passes ``beta`` to those links alone.

| link                | loss of ``z``                                                | used by      |
|---------------------|--------------------------------------------------------------|--------------|
| ``sigmoid``         | ``-logsig(z)``                                               | DPO, SimPO   |
| ``smoothed_sigmoid``| ``-(1-eps) logsig(z) - eps logsig(-z)``                      | cDPO, CPO    |
| ``robust``          | ``(-(1-eps) logsig(z) + eps logsig(-z)) / (1-2 eps)``        | robust DPO   |
| ``hinge``           | ``max(0, 1 - z)``                                            | SLiC / RSO   |
| ``squared``         | ``((z - 1/2) / beta)^2`` (= ``(h - 1/(2 beta))^2``, z=beta h)| IPO          |
| ``exo``             | ``KL(Bern(sigma(z)) || Bern(1-eps))``                        | EXO          |
| ``discopop``        | ``-logsig(z) (1 - sigma(z/tau)) + exp(-z) sigma(z/tau)``     | DiscoPOP     |
| ``rpo_bwd``         | ``KL(Bern(sigma(d_r)) || Bern(sigma(z)))``, d_r = eta * gap  | RPO          |
| ``rpo_fwd``         | ``KL(Bern(sigma(z)) || Bern(sigma(d_r)))``                   | RPO          |
| ``rpo_sqr``         | ``(z - d_r)^2``                                              | RPO          |

``score_gap`` is ``R(w) - R(l)``, the judge's score difference; links that use it have
``uses_scores = True`` (the composed loss then requires ``chosen_scores`` / ``rejected_scores``).

All links are finite for every finite ``z`` (``logsigmoid`` is the stable ``-softplus(-z)``; the
DiscoPOP exponential term is computed as ``exp(-z + logsig(z/tau))`` and capped, where TRL's
``exp(-z) * sigmoid(z/tau)`` gives ``inf * 0 = nan`` for ``z < -88`` in float32).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from alphapo.errors import UserError
from alphapo.losses.contract import POSITIVE, Interval, ranges
from alphapo.losses.numerics import exp_capped

Tensor = torch.Tensor
logsig = F.logsigmoid


@dataclass(frozen=True)
class Link:
    """A link ``fn(z, **params)`` from reward gap to loss; ``uses_scores`` adds ``score_gap=``.

    ``params``: its hyper-parameters and defaults; ``ranges``: their documented ranges. ``takes_beta``:
    whether ``fn`` has a ``beta`` keyword (read from its signature).
    """

    name: str
    fn: Callable[..., Tensor]
    params: dict[str, float] = field(default_factory=dict)
    uses_scores: bool = False
    doc: str = ""
    ranges: dict[str, Interval] = field(default_factory=dict)

    @property
    def takes_beta(self) -> bool:
        return "beta" in inspect.signature(self.fn).parameters


def sigmoid(z: Tensor) -> Tensor:
    """Bradley-Terry negative log-likelihood ``-logsig(z)`` (DPO eq. 7)."""
    return -logsig(z)


def smoothed_sigmoid(z: Tensor, *, eps: float) -> Tensor:
    """Label-smoothed BT: ``-(1-eps) logsig(z) - eps logsig(-z)`` (conservative DPO, Mitchell 2023)."""
    return -(1.0 - eps) * logsig(z) - eps * logsig(-z)


def robust(z: Tensor, *, eps: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024): unbiased BT loss under label-flip rate ``eps``."""
    if not 0.0 <= eps < 0.5:
        raise UserError(f"robust link needs 0 <= eps < 0.5 (flip rate), got eps={eps}")
    return (-(1.0 - eps) * logsig(z) + eps * logsig(-z)) / (1.0 - 2.0 * eps)


def hinge(z: Tensor) -> Tensor:
    """SLiC / RSO hinge ``max(0, 1 - z)``."""
    return torch.relu(1.0 - z)


def squared(z: Tensor, *, beta: float) -> Tensor:
    """IPO squared loss (Azar et al. 2023, eq. 17): ``(z/beta - 1/(2 beta))^2``.

    With ``z = beta * h`` this is IPO's ``(h - 1/(2 tau))^2`` with ``tau = beta``.
    """
    return ((z - 0.5) / beta) ** 2


def exo(z: Tensor, *, eps: float) -> Tensor:
    """EXO-pref for two responses (Ji et al. 2024, eq. 16): ``KL(Bern(sigma(z)) || Bern(1 - eps))``."""
    if not 0.0 < eps < 1.0:
        raise UserError(f"exo link needs 0 < eps < 1 (EXO recommends 1e-3), got eps={eps}")
    log_qw, log_ql = logsig(z), logsig(-z)
    return torch.exp(log_qw) * (log_qw - math.log1p(-eps)) + torch.exp(log_ql) * (log_ql - math.log(eps))


def discopop(z: Tensor, *, tau: float) -> Tensor:
    """DiscoPOP / log-ratio modulated loss (Chan Lu et al. 2024, eq. 5).

    ``(1 - sigma(z/tau)) * (-logsig(z)) + sigma(z/tau) * exp(-z)``; the second product is evaluated as
    ``exp(-z + logsig(z/tau))`` (capped above ``MAX_EXPONENT``) so it never forms ``inf * 0``.
    """
    mod = torch.sigmoid(z / tau)
    return (1.0 - mod) * (-logsig(z)) + exp_capped(-z + logsig(z / tau))


def _bern_kl(log_p: Tensor, log_1mp: Tensor, log_q: Tensor, log_1mq: Tensor) -> Tensor:
    """``KL(Bern(p) || Bern(q))`` from log-probabilities (exact 0 * log 0 = 0 handled by exp(-inf) = 0)."""
    return torch.exp(log_p) * (log_p - log_q) + torch.exp(log_1mp) * (log_1mp - log_1mq)


def rpo_bwd(z: Tensor, *, eta: float, score_gap: Tensor) -> Tensor:
    """RPO backward KL: ``KL(Bern(sigma(d_r)) || Bern(sigma(z)))``, ``d_r = eta * score_gap``."""
    d_r = eta * score_gap
    return _bern_kl(logsig(d_r), logsig(-d_r), logsig(z), logsig(-z))


def rpo_fwd(z: Tensor, *, eta: float, score_gap: Tensor) -> Tensor:
    """RPO forward KL: ``KL(Bern(sigma(z)) || Bern(sigma(d_r)))``, ``d_r = eta * score_gap``."""
    d_r = eta * score_gap
    return _bern_kl(logsig(z), logsig(-z), logsig(d_r), logsig(-d_r))


def rpo_sqr(z: Tensor, *, eta: float, score_gap: Tensor) -> Tensor:
    """RPO squared distance ``(z - d_r)^2``, ``d_r = eta * score_gap``."""
    return (z - eta * score_gap) ** 2


_EPS_SMOOTHING = ranges(eps="[0, 0.5)")
_ETA = ranges(eta=POSITIVE)

LINKS: dict[str, Link] = {
    link.name: link
    for link in (
        Link("sigmoid", sigmoid, {}, False, "-logsig(z)"),
        Link("smoothed_sigmoid", smoothed_sigmoid, {"eps": 0.1}, False, "-(1-eps)logsig(z) - eps logsig(-z)",
             _EPS_SMOOTHING),
        Link("robust", robust, {"eps": 0.1}, False, "(-(1-eps)logsig(z) + eps logsig(-z)) / (1-2eps)",
             _EPS_SMOOTHING),
        Link("hinge", hinge, {}, False, "max(0, 1 - z)"),
        Link("squared", squared, {}, False, "((z - 1/2)/beta)^2"),
        Link("exo", exo, {"eps": 1e-3}, False, "KL(Bern(sigma(z)) || Bern(1-eps))", ranges(eps="(0, 1)")),
        Link("discopop", discopop, {"tau": 0.05}, False, "(1-sigma(z/tau))(-logsig z) + sigma(z/tau) e^-z",
             ranges(tau=POSITIVE)),
        Link("rpo_bwd", rpo_bwd, {"eta": 1.0}, True, "KL(Bern(sigma(d_r)) || Bern(sigma(z)))", _ETA),
        Link("rpo_fwd", rpo_fwd, {"eta": 1.0}, True, "KL(Bern(sigma(z)) || Bern(sigma(d_r)))", _ETA),
        Link("rpo_sqr", rpo_sqr, {"eta": 1.0}, True, "(z - d_r)^2", _ETA),
    )
}
"""Built-in pairwise links by name."""
