"""Multi-response losses: ``k >= 2`` scored responses per prompt (RPO's multi-response forms and RLOO).

Inputs are keyword tensors of shape ``(B, k)``: ``logps`` (summed over completion tokens), ``lengths``,
``scores`` (the judge's rewards ``R``), and ``ref_logps`` where the loss uses a reference model. They
return a ``LossOutput`` with ``.losses`` (B,), ``.rewards`` (B, k) detached, and ``.chosen_rewards`` /
``.rejected_rewards`` = the rewards of the best- / worst-scored response of each prompt.

- ``rpo_multi``: ``KL(softmax(eta R) || softmax(r))`` over the k responses, ``r`` = implicit rewards;
- ``rpo_bwd_all_pairs`` / ``rpo_fwd_all_pairs`` / ``rpo_sqr_all_pairs``: the mean of the pairwise RPO
  distance ``D(r_i - r_j, eta (R_i - R_j))`` over the ``k(k-1)/2`` pairs ``i < j`` (each distance is
  symmetric under swapping the pair, so no orientation is needed);
- ``rloo``: REINFORCE leave-one-out, ``-(1/k) sum_i (R_i - mean_{j!=i} R_j) logp_i``.

Like the pairwise losses, the first two are composed from a reference piece, a normaliser and a reward
shape (``compose_multi``), so e.g. ``compose_multi(shape="alpha", link="rpo_sqr", normalize="mean")``
is the all-pairs squared RPO on AlphaPO rewards. The implicit reward defaults to DPO's ``beta * h``.

Why ``rloo`` is here: the RPO paper shows it is the limit of ``rpo_sqr`` with ``pi_ref = stopgrad(pi)``.
With ``d_pi = 0`` in value, the gradient of the all-pairs mean of ``(d_pi - d_r)^2`` with respect to
``logp_m`` is ``-(4 eta beta / k) (R_m - mean_{j!=m} R_j)``, exactly ``4 eta beta`` times RLOO's
(tested in ``tests/losses/test_reductions.py``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F

from alphapo.errors import UserError
from alphapo.losses.compose import NORMALIZERS, REFERENCES, Normalizer, Reference
from alphapo.losses.contract import (
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    LossOutput,
    MissingInputError,
    bind_arguments,
    check_multi_inputs,
    keyword,
    loss_contract,
    ranges,
    registry,
    resolve_piece,
)
from alphapo.losses.links import LINKS, Link
from alphapo.losses.shapes import SHAPES, RewardShape

Tensor = torch.Tensor


def _best_worst(rewards: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    best = scores.argmax(dim=1, keepdim=True)
    worst = scores.argmin(dim=1, keepdim=True)
    return rewards.gather(1, best).squeeze(1), rewards.gather(1, worst).squeeze(1)


class MultiResponseLoss:
    """A multi-response loss composed from reference, normaliser, reward shape and an aggregate.

    ``aggregate`` is ``"softmax_kl"`` (rpo_multi) or a score-using pairwise ``Link`` (all pairs).
    """

    multi_response = True

    def __init__(self, *, name: str, shape: RewardShape, normalize: Normalizer, reference: Reference,
                 aggregate: str | Link, defaults: dict[str, float] | None = None, doc: str | None = None):
        self.name = self.__name__ = self.__qualname__ = name
        self.shape, self.normalize, self.reference, self.aggregate = shape, normalize, reference, aggregate
        params: dict[str, Any] = {"beta": 0.1, **shape.params}
        declared = {"beta": Interval.parse(POSITIVE), **shape.ranges}
        if isinstance(aggregate, Link):
            if not aggregate.uses_scores:
                raise UserError(f"all-pairs losses need a score-using link (rpo_bwd, rpo_fwd, rpo_sqr), "
                                f"got {aggregate.name!r}")
            params.update(aggregate.params)
            declared.update(aggregate.ranges)
            self._link_takes_beta = aggregate.takes_beta
        else:
            params["eta"] = 1.0
            declared["eta"] = Interval.parse(POSITIVE)
        for key, value in (defaults or {}).items():
            if key not in params:
                raise UserError(f"{name}: default for unknown hyper-parameter {key!r}; "
                                f"accepts {sorted(params)}")
            params[key] = value
        optional = ["lengths"]
        requires = {"scores"}
        if reference.uses_reference:
            optional.append("ref_logps")
            requires.add("ref_logps")
        self.requires = frozenset(requires)
        self.ranges = {k: v for k, v in declared.items() if k in params}
        self.__signature__ = inspect.Signature(
            [keyword("logps"), keyword("scores", None)] + [keyword(k, None) for k in optional]
            + [keyword(k, v) for k, v in params.items()]
        )
        self.__doc__ = doc

    def __repr__(self) -> str:
        agg = self.aggregate if isinstance(self.aggregate, str) else f"all_pairs({self.aggregate.name})"
        return f"MultiResponseLoss({self.name!r}, shape={self.shape.name!r}, aggregate={agg!r})"

    def __call__(self, **kwargs: Any) -> LossOutput:
        a = bind_arguments(self.name, self.__signature__, kwargs)
        if self.normalize.needs_lengths and a.get("lengths") is None:
            raise MissingInputError(f"loss {self.name!r} normalises by length and needs input lengths "
                                    "(got None)")
        dtype = check_multi_inputs(self.name, self.requires, a)
        t = {k: v.to(dtype) for k, v in a.items() if torch.is_tensor(v)}
        u = self.normalize.fn(self.reference.fn(t["logps"], t.get("ref_logps")), t.get("lengths"))
        shape_kw = {k: a[k] for k in self.shape.params}
        beta, scores = a["beta"], t["scores"]

        if isinstance(self.aggregate, Link):
            k = u.shape[1]
            i, j = torch.triu_indices(k, k, offset=1, device=u.device)
            z = self.shape.difference(u[:, i], u[:, j], beta=beta, **shape_kw)  # (B, k(k-1)/2)
            link_kw = {name: a[name] for name in self.aggregate.params}
            if self._link_takes_beta:
                link_kw["beta"] = beta
            pair = self.aggregate.fn(z, score_gap=scores[:, i] - scores[:, j], **link_kw)
            losses = pair.mean(dim=1)
            rewards = self.shape.reward(u.detach(), beta=beta, **shape_kw)
        else:  # softmax_kl
            r = self.shape.reward(u, beta=beta, **shape_kw)
            target = F.log_softmax(a["eta"] * scores, dim=1)
            losses = (target.exp() * (target - F.log_softmax(r, dim=1))).sum(dim=1)
            rewards = r.detach()
        chosen, rejected = _best_worst(rewards, scores)
        return LossOutput(losses, chosen, rejected, rewards)


def compose_multi(*, shape: str | RewardShape = "log", link: str | Link = "rpo_bwd",
                  normalize: str | Normalizer = "sum", reference: str | Reference = "ratio",
                  defaults: dict[str, float] | None = None, name: str | None = None,
                  doc: str | None = None) -> MultiResponseLoss:
    """Build a multi-response loss: ``link="softmax_kl"`` (rpo_multi) or an RPO distance (all pairs)."""
    s = resolve_piece(shape, SHAPES, RewardShape, "reward shape")
    agg: str | Link = "softmax_kl" if link == "softmax_kl" else resolve_piece(link, LINKS, Link, "link")
    n = resolve_piece(normalize, NORMALIZERS, Normalizer, "normalize")
    r = resolve_piece(reference, REFERENCES, Reference, "reference")
    label = name or f"{s.name}-{link if isinstance(link, str) else link.name}-{n.name}-{r.name}-multi"
    return MultiResponseLoss(name=label, shape=s, normalize=n, reference=r, aggregate=agg, defaults=defaults,
                             doc=doc)


rpo_multi = compose_multi(link="softmax_kl", name="rpo_multi", doc="""\
RPO, multi-response (NeMo-Aligner / RPO paper): ``KL(softmax(eta R) || softmax(r))`` over the k responses.

``r = beta * (logp - logp_ref)`` (any shape via ``compose_multi(link="softmax_kl")``); inputs (B, k):
``logps``, ``ref_logps``, ``scores``. With k = 2 the softmaxes are Bernoullis of the gaps, so this is
``rpo_bwd`` (tested). TRL: none. Deviations: none.""")

_ALL_PAIRS_DOC = """\
RPO all-pairs form, {dist}: mean over the k(k-1)/2 pairs ``i < j`` of ``{link}(r_i - r_j, eta (R_i - R_j))``.

``r = beta * (logp - logp_ref)`` (any shape via ``compose_multi(link="{link}")``); inputs (B, k): ``logps``,
``ref_logps``, ``scores``. With k = 2 it equals the pairwise ``{link}`` (tested). TRL: none.
Deviations: none."""

rpo_bwd_all_pairs = compose_multi(link="rpo_bwd", name="rpo_bwd_all_pairs",
                                  doc=_ALL_PAIRS_DOC.format(dist="backward KL", link="rpo_bwd"))
rpo_fwd_all_pairs = compose_multi(link="rpo_fwd", name="rpo_fwd_all_pairs",
                                  doc=_ALL_PAIRS_DOC.format(dist="forward KL", link="rpo_fwd"))
rpo_sqr_all_pairs = compose_multi(link="rpo_sqr", name="rpo_sqr_all_pairs",
                                  doc=_ALL_PAIRS_DOC.format(dist="squared distance", link="rpo_sqr"))


def _rloo_requires(params: dict[str, Any]) -> frozenset[str]:
    """``rloo`` needs the reference log-probs only with a KL penalty (``beta != 0``)."""
    return frozenset({"scores"} | ({"ref_logps"} if params["beta"] != 0.0 else set()))


@loss_contract(requires={"scores"}, ranges=ranges(beta=NON_NEGATIVE), multi_response=True)
def rloo(*, logps: Tensor, scores: Tensor | None = None, lengths: Tensor | None = None,
         ref_logps: Tensor | None = None, beta: float = 0.0) -> LossOutput:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to Basics", arXiv:2402.14740; Kool et al. 2019).

    Per prompt with k sampled responses: ``R'_i = R_i - beta (logp_i - logp_ref_i)`` (the KL penalty
    folded into the reward, detached; ``beta = 0`` or no ``ref_logps``: ``R' = R``), weight
    ``w_i = R'_i - mean_{j!=i} R'_j`` and loss ``-(1/k) sum_i w_i logp_i``. Shapes (B, k) in, (B,) out;
    ``rewards`` = ``R'``. The weights carry no gradient, so only the ``logp_i`` are differentiated (the
    score-function estimator). It is the ``rpo_sqr`` limit with ``pi_ref = stopgrad(pi)`` (see module
    docstring). TRL: RLOOTrainer (online, not a loss_type). Deviations: none; ``lengths`` is accepted
    and unused (the sequence log-prob is summed, as in the paper).
    """
    args = dict(locals())
    dtype = check_multi_inputs("rloo", _rloo_requires(args), args)
    lp = logps.to(dtype)
    with torch.no_grad():
        r = scores.to(dtype)
        if ref_logps is not None and beta != 0.0:
            r = r - beta * (lp - ref_logps.to(dtype))
        k = r.shape[1]
        weights = (k * r - r.sum(dim=1, keepdim=True)) / (k - 1)  # R_i - mean of the other k-1
    losses = -(weights * lp).mean(dim=1)
    chosen, rejected = _best_worst(r, scores)
    return LossOutput(losses, chosen, rejected, r)


rloo.requires_for = _rloo_requires  # type: ignore[attr-defined]

MULTI_LOSSES: dict[str, Callable[..., LossOutput]] = registry(
    rpo_multi, rpo_bwd_all_pairs, rpo_fwd_all_pairs, rpo_sqr_all_pairs, rloo)
"""Every multi-response loss by name (contract: keyword tensors of shape (B, k))."""
