"""Compose a pairwise loss from four pieces: reference, length normalisation, reward shape and link.

    u(y)  = normalize(reference(logp(y), logp_ref(y)), |y|)      # "ratio"/"none", then "sum"/"mean"
    z     = shape.difference(u(w), u(l); beta, ...) - gamma       # r(w) - r(l) - gamma
    loss  = link(z; beta, ...)  [+ nll_weight * NLL(w)]           # per example, shape (B,)

Every combination is valid, e.g. the alpha shape with the IPO squared link on reference log-ratios:

    >>> from alphapo.losses import compose
    >>> loss = compose(shape="alpha", link="squared", normalize="mean", reference="ratio")
    >>> out = loss(chosen_logps=..., rejected_logps=..., chosen_lengths=..., rejected_lengths=...,
    ...            ref_chosen_logps=..., ref_rejected_logps=..., beta=0.1, alpha=0.5)
    >>> out.losses.mean().backward()

The returned ``PairwiseLoss`` follows the losses contract (``alphapo.losses``' module docstring): keyword-only call, an
explicit ``inspect.signature`` (only the inputs and hyper-parameters this combination uses; the
reference log-probs appear only when ``reference="ratio"``, scores only for the RPO links), attributes
``requires`` (inputs that must be given beyond logps/lengths) and ``multi_response = False``, and a
``LossOutput`` with ``.losses`` (B,) and detached ``.chosen_rewards`` / ``.rejected_rewards`` (B,),
the shape's rewards ``r(u)``.

Pieces may be given by name (``SHAPES``, ``LINKS``, ``NORMALIZERS``, ``REFERENCES``) or as objects
(``RewardShape``, ``Link``, ``Normalizer``, ``Reference``), so a user-defined shape or link composes
with the built-in ones. Hyper-parameters are the union of the pieces' (``beta`` and ``gamma`` always;
``alpha`` for the alpha shape; ``eps``, ``tau`` or ``eta`` for some links; ``nll_weight`` with an NLL
term); ``defaults=`` overrides their default values.

Numerics: inputs in bfloat16/float16 are computed in float32, float64 stays float64; the returned
tensors have that compute dtype.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from alphapo.errors import UserError
from alphapo.losses.links import LINKS, Link
from alphapo.losses.numerics import compute_dtype
from alphapo.losses.shapes import SHAPES, RewardShape

Tensor = torch.Tensor


class MissingInputError(UserError):
    """A loss was called without an input tensor it needs (the message names it)."""


@dataclass(frozen=True)
class LossOutput:
    """What every loss returns.

    ``losses``: per-example losses ``(B,)`` (the caller reduces). ``chosen_rewards`` /
    ``rejected_rewards``: detached ``(B,)`` rewards for logging (multi-response losses: the rewards of
    the best- and worst-scored response). ``rewards``: detached ``(B, k)`` for multi-response losses,
    else ``None``.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    rewards: Tensor | None = None


@dataclass(frozen=True)
class Normalizer:
    """Length normalisation ``fn(logps, lengths)``; ``needs_lengths`` says whether lengths are read."""

    name: str
    fn: Callable[[Tensor, Tensor | None], Tensor]
    needs_lengths: bool


@dataclass(frozen=True)
class Reference:
    """How the reference model enters: ``fn(logps, ref_logps)``; ``uses_reference`` adds the ref inputs."""

    name: str
    fn: Callable[[Tensor, Tensor | None], Tensor]
    uses_reference: bool


def _summed(logps: Tensor, lengths: Tensor | None) -> Tensor:
    return logps


def _per_token(logps: Tensor, lengths: Tensor | None) -> Tensor:
    return logps / lengths


def _log_ratio(logps: Tensor, ref_logps: Tensor | None) -> Tensor:
    return logps - ref_logps


def _policy_only(logps: Tensor, ref_logps: Tensor | None) -> Tensor:
    return logps


# Module-level functions rather than lambdas, so composed losses pickle (e.g. into worker processes).
NORMALIZERS: dict[str, Normalizer] = {
    "sum": Normalizer("sum", _summed, False),
    "mean": Normalizer("mean", _per_token, True),
}
"""``sum``: u = summed log-prob (DPO). ``mean``: u = log-prob / |y| (SimPO, AlphaPO, IPO as in TRL)."""

REFERENCES: dict[str, Reference] = {
    "ratio": Reference("ratio", _log_ratio, True),
    "none": Reference("none", _policy_only, False),
}
"""``ratio``: u uses ``logp - logp_ref`` (DPO family). ``none``: u uses ``logp`` (SimPO, CPO family)."""


def _resolve(value: Any, table: dict[str, Any], cls: type, what: str) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise UserError(f"unknown {what} {value!r}; valid: {', '.join(sorted(table))} "
                    f"(or a {cls.__name__} object)")


def _kw(name: str, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)


def check_inputs(loss_name: str, requires: frozenset[str], args: dict[str, Any], shape_of: str) -> None:
    """Raise ``MissingInputError`` naming every required input that is ``None``, and check shapes agree."""
    missing = sorted(k for k in requires if args.get(k) is None)
    if missing:
        raise MissingInputError(
            f"loss {loss_name!r} needs input(s) {', '.join(missing)} (got None); "
            f"it requires {sorted(requires)} besides the policy log-probs"
        )
    ref = args[shape_of]
    for k, v in args.items():
        if torch.is_tensor(v) and k != shape_of and k.endswith(("logps", "lengths", "scores", "nll")):
            if v.shape != ref.shape:
                raise UserError(
                    f"loss {loss_name!r}: input {k} has shape {tuple(v.shape)} but {shape_of} has "
                    f"{tuple(ref.shape)}; all inputs must have the same shape"
                )


def bind_arguments(loss_name: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Bind a loss call's keywords to its signature (defaults applied); a TypeError lists what it accepts."""
    try:
        bound = signature.bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"loss {loss_name!r}: {err}; accepted keywords: "
                        f"{', '.join(signature.parameters)}") from None
    bound.apply_defaults()
    return bound.arguments


def lengths_or_error(loss_name: str, lengths: Tensor | None, which: str, dtype: torch.dtype) -> Tensor:
    """Lengths as a float tensor; a clear error if missing or not positive (a completion has >= 1 token)."""
    if lengths is None:
        raise MissingInputError(f"loss {loss_name!r} normalises by length and needs input {which} (got None)")
    if bool((lengths <= 0).any()):
        raise UserError(f"loss {loss_name!r}: {which} must be positive (a completion has at least its EOS)")
    return lengths.to(dtype)


class PairwiseLoss:
    """A pairwise loss composed from reference, normaliser, shape and link (see the module docstring).

    Call it with keyword tensors of shape ``(B,)``; ``inspect.signature(loss)`` lists exactly the inputs
    and hyper-parameters it accepts. Built by ``compose``; the named losses in ``LOSSES`` are instances.
    """

    multi_response = False

    def __init__(
        self,
        *,
        name: str,
        shape: RewardShape,
        link: Link,
        normalize: Normalizer,
        reference: Reference,
        nll_weight: float | None = None,
        defaults: dict[str, float] | None = None,
        doc: str | None = None,
    ) -> None:
        self.name = self.__name__ = self.__qualname__ = name
        self.shape, self.link, self.normalize, self.reference = shape, link, normalize, reference
        params: dict[str, Any] = {"beta": 0.1, **shape.params, "gamma": 0.0, **link.params}
        if nll_weight is not None:
            params["nll_weight"] = nll_weight
        for key, value in (defaults or {}).items():
            if key not in params:
                raise UserError(f"compose({name!r}): default for unknown hyper-parameter {key!r}; "
                                f"this combination accepts {sorted(params)}")
            params[key] = value
        self.defaults = params

        inputs = ["chosen_logps", "rejected_logps"]
        optional = ["chosen_lengths", "rejected_lengths"]
        requires: set[str] = set()
        if reference.uses_reference:
            optional += ["ref_chosen_logps", "ref_rejected_logps"]
            requires |= {"ref_chosen_logps", "ref_rejected_logps"}
        if link.uses_scores:
            optional += ["chosen_scores", "rejected_scores"]
            requires |= {"chosen_scores", "rejected_scores"}
        if nll_weight is not None:
            optional.append("chosen_nll")  # optional: defaults to -chosen_logps / chosen_lengths
        self.requires = frozenset(requires)
        self.__signature__ = inspect.Signature(
            [_kw(k) for k in inputs] + [_kw(k, None) for k in optional]
            + [_kw(k, v) for k, v in params.items()]
        )
        self.__doc__ = doc or (
            f"Composed pairwise loss: reference={reference.name}, normalize={normalize.name}, "
            f"shape={shape.name} ({shape.doc}), link={link.name} ({link.doc})."
        )

    def __repr__(self) -> str:
        return (f"PairwiseLoss({self.name!r}, shape={self.shape.name!r}, link={self.link.name!r}, "
                f"normalize={self.normalize.name!r}, reference={self.reference.name!r})")

    def __call__(self, **kwargs: Any) -> LossOutput:
        a = bind_arguments(self.name, self.__signature__, kwargs)
        check_inputs(self.name, self.requires, a, "chosen_logps")
        dtype = compute_dtype(*(v for v in a.values() if torch.is_tensor(v)))

        def f(key: str) -> Tensor | None:
            v = a.get(key)
            return None if v is None else v.to(dtype)

        lw = lengths_or_error(self.name, a["chosen_lengths"], "chosen_lengths", dtype) \
            if self.normalize.needs_lengths else None
        ll = lengths_or_error(self.name, a["rejected_lengths"], "rejected_lengths", dtype) \
            if self.normalize.needs_lengths else None
        u_w = self.normalize.fn(self.reference.fn(f("chosen_logps"), f("ref_chosen_logps")), lw)
        u_l = self.normalize.fn(self.reference.fn(f("rejected_logps"), f("ref_rejected_logps")), ll)

        shape_kw = {k: a[k] for k in self.shape.params}
        z = self.shape.difference(u_w, u_l, beta=a["beta"], **shape_kw) - a["gamma"]
        link_kw = {k: a[k] for k in self.link.params}
        if self.link.uses_scores:
            link_kw["score_gap"] = f("chosen_scores") - f("rejected_scores")
        losses = self.link.fn(z, beta=a["beta"], **link_kw)

        if "nll_weight" in a:
            nll = f("chosen_nll")
            if nll is None:
                # Mean token NLL of the chosen completion, from the summed log-prob and its length.
                nll = -f("chosen_logps") / lengths_or_error(self.name, a["chosen_lengths"],
                                                             "chosen_lengths (or chosen_nll)", dtype)
            losses = losses + a["nll_weight"] * nll

        with torch.no_grad():
            chosen_rewards = self.shape.reward(u_w.detach(), beta=a["beta"], **shape_kw)
            rejected_rewards = self.shape.reward(u_l.detach(), beta=a["beta"], **shape_kw)
        return LossOutput(losses, chosen_rewards, rejected_rewards)


def compose(
    *,
    shape: str | RewardShape = "log",
    link: str | Link = "sigmoid",
    normalize: str | Normalizer = "sum",
    reference: str | Reference = "ratio",
    nll_weight: float | None = None,
    defaults: dict[str, float] | None = None,
    name: str | None = None,
    doc: str | None = None,
) -> PairwiseLoss:
    """Build a contract-conforming pairwise loss from a reward shape, a link and the two input pieces.

    ``shape``: ``log | alpha | linear | inverse_linear`` or a ``RewardShape``. ``link``: ``sigmoid |
    smoothed_sigmoid | robust | hinge | squared | exo | discopop | rpo_bwd | rpo_fwd | rpo_sqr`` or a
    ``Link``. ``normalize``: ``sum | mean``. ``reference``: ``ratio | none``. ``nll_weight``: if a
    number, adds ``nll_weight * chosen_nll`` (the CPO term) and makes that weight a hyper-parameter with
    this default. ``defaults``: default values of hyper-parameters (e.g. ``{"beta": 2.5}``).

    With the defaults, ``compose()`` is DPO: log shape, sigmoid link, summed log-ratios.
    """
    s = _resolve(shape, SHAPES, RewardShape, "reward shape")
    lk = _resolve(link, LINKS, Link, "link")
    n = _resolve(normalize, NORMALIZERS, Normalizer, "normalize")
    r = _resolve(reference, REFERENCES, Reference, "reference")
    label = name or f"{s.name}-{lk.name}-{n.name}-{r.name}"
    return PairwiseLoss(name=label, shape=s, link=lk, normalize=n, reference=r, nll_weight=nll_weight,
                        defaults=defaults, doc=doc)
