"""The losses contract: what every loss accepts, requires, returns, and which hyper-parameter values it allows.

A loss is a keyword-only callable. Its keywords are of two kinds:

- tensor inputs, computed by the trainer (``LOSS_TENSOR_INPUTS``): ``(B,)`` tensors for pairwise losses
  (``chosen_logps``, ``rejected_logps``, ``chosen_lengths``, ``rejected_lengths`` and, where used,
  ``ref_chosen_logps``, ``ref_rejected_logps``, ``chosen_scores``, ``rejected_scores``, ``chosen_nll``),
  ``(B, k)`` tensors for multi-response ones (``logps``, ``lengths``, ``scores``, ``ref_logps``);
- hyper-parameters: every other keyword (``beta``, ``gamma``, ``alpha``, ``eps``, ``eta``, ...), each with
  its default in the signature.

Every loss carries these attributes:

- ``name``: the name it is registered under. ``registry(*losses)`` builds a name -> loss table from it,
  so a name is written once;
- ``requires``: the tensor inputs it must get beyond the policy log-probs and lengths;
  ``requires_for(params)``, where present, answers for given hyper-parameters (``rloo`` needs its
  reference input only with a KL penalty, ``beta != 0``). ``loss_inputs(loss, params)`` answers for any
  loss, and says whether the reference model must be run;
- ``multi_response``: ``(B, k)`` inputs instead of ``(B,)``;
- ``length_normalized`` (optional, default False): whether it compares length-normalised log-probs
  ``logp / |y|``; a composed loss with ``normalize="mean"`` is, without declaring it.
  ``length_normalized(loss)`` answers for any loss (the trainer's ``logps/*`` metrics follow it);
- ``ranges``: the documented range of each hyper-parameter, as an ``Interval`` (``"(0, inf)"``,
  ``"[0, 0.5)"``). ``resolve_hyperparameters(loss, params)`` checks names, types and ranges and returns
  every hyper-parameter with the value that will be used (defaults filled in). Values must be finite;
  an infinite bound is never included.

It returns a ``LossOutput``. Missing inputs raise ``MissingInputError`` naming them (``check_inputs``,
``check_multi_inputs``); mismatched shapes and non-positive lengths are ``UserError`` s.

The pieces ``compose`` combines (shapes, links, normalisers, references) are looked up by name or
passed as objects (``resolve_piece``).
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch

from alphapo.errors import UserError
from alphapo.losses.numerics import compute_dtype

Tensor = torch.Tensor

LOSS_TENSOR_INPUTS = frozenset({
    "chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths",
    "ref_chosen_logps", "ref_rejected_logps", "chosen_scores", "rejected_scores", "chosen_nll",
    "logps", "lengths", "scores", "ref_logps",
})
"""Keyword names of the contract that are tensors computed by the trainer, not hyper-parameters."""

REFERENCE_INPUTS = frozenset({"ref_chosen_logps", "ref_rejected_logps", "ref_logps"})
"""The tensor inputs that come from the reference model."""


class MissingInputError(UserError):
    """A loss was called without an input tensor it needs (the message names it)."""


class HyperparameterError(UserError):
    """A loss hyper-parameter that is unknown, not a number, or outside its documented range."""


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


# --------------------------------------------------------------------------------------------------
# ranges


@dataclass(frozen=True)
class Interval:
    """A range of real numbers, written as in mathematics: ``Interval.parse("[0, 0.5)")``.

    ``inf`` / ``-inf`` bounds are always open, so every member is finite (NaN is never a member).
    """

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        t = text.strip()
        if len(t) < 5 or t[0] not in "[(" or t[-1] not in "])" or "," not in t:
            raise ValueError(f"not an interval: {text!r} (write e.g. '[0, 1)' or '(0, inf)')")
        low, high = (float(part) for part in t[1:-1].split(","))
        return cls(low, high, t[0] == "[" and math.isfinite(low), t[-1] == "]" and math.isfinite(high))

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        def bound(x: float) -> str:
            if not math.isfinite(x):
                return "inf" if x > 0 else "-inf"
            return str(int(x)) if x == int(x) else repr(x)

        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"{left}{bound(self.low)}, {bound(self.high)}{right}"


def ranges(**spec: str) -> dict[str, Interval]:
    """``ranges(beta="(0, inf)", eps="[0, 0.5)")`` -> ``{"beta": Interval(...), ...}``."""
    return {name: Interval.parse(text) for name, text in spec.items()}


POSITIVE = "(0, inf)"
NON_NEGATIVE = "[0, inf)"

WHY = {
    "beta": "beta <= 0 trains towards the rejected responses (or not at all)",
    "gamma": "gamma is the target margin between chosen and rejected rewards",
    "eps": "eps is a label-flip (smoothing) rate; at 0.5 and above the labels carry no or inverted signal",
    "eta": "eta scales the judge's score gap; eta <= 0 ignores or inverts the scores",
    "tau": "tau is a temperature",
    "nll_weight": "a negative NLL weight lowers the chosen likelihood",
}
"""Why a hyper-parameter's range is what it is, added to the error message."""


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# --------------------------------------------------------------------------------------------------
# declaring and looking up losses


def loss_contract(*, requires: Iterable[str] = (), ranges: Mapping[str, Interval] | None = None,
                  multi_response: bool = False) -> Callable[[Callable[..., LossOutput]], Callable[..., LossOutput]]:
    """Decorator: attach the contract attributes to a loss written as a plain function.

    ``name`` is the function's own name; ``requires``, ``ranges`` and ``multi_response`` as in the
    module docstring.
    """

    def deco(fn: Callable[..., LossOutput]) -> Callable[..., LossOutput]:
        fn.name = fn.__name__  # type: ignore[attr-defined]
        fn.requires = frozenset(requires)  # type: ignore[attr-defined]
        fn.ranges = dict(ranges or {})  # type: ignore[attr-defined]
        fn.multi_response = multi_response  # type: ignore[attr-defined]
        return fn

    return deco


def registry(*losses: Callable[..., LossOutput]) -> dict[str, Callable[..., LossOutput]]:
    """Losses by their own ``name`` (a duplicate name is an error)."""
    table: dict[str, Callable[..., LossOutput]] = {}
    for loss in losses:
        name = loss.name  # type: ignore[attr-defined]
        if name in table:
            raise ValueError(f"two losses are named {name!r}")
        table[name] = loss
    return table


def resolve_piece(value: Any, table: Mapping[str, Any], cls: type, what: str) -> Any:
    """A composition piece given by name (looked up in ``table``) or as a ``cls`` object."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise UserError(f"unknown {what} {value!r}; valid: {', '.join(sorted(table))} "
                    f"(or a {cls.__name__} object)")


def keyword(name: str, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A keyword-only parameter, for building a loss's explicit ``__signature__``."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)


def length_normalized(loss: Callable[..., Any]) -> bool:
    """Whether ``loss`` compares length-normalised log-probs (``logp / |y|``): its ``length_normalized``
    attribute where it declares one, else whether it was composed with ``normalize="mean"``."""
    declared = getattr(loss, "length_normalized", None)
    if declared is not None:
        return bool(declared)
    return getattr(getattr(loss, "normalize", None), "name", None) == "mean"


def loss_name(loss: Callable[..., Any]) -> str:
    return getattr(loss, "name", getattr(loss, "__name__", repr(loss)))


# --------------------------------------------------------------------------------------------------
# hyper-parameters


def hyperparameters(loss: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``loss`` that are hyper-parameters (not tensor inputs), in order."""
    return {name: p for name, p in inspect.signature(loss).parameters.items()
            if name not in LOSS_TENSOR_INPUTS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _nearest(key: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if match:
        return f"; did you mean {match[0]!r}?"
    return f"; it accepts {', '.join(candidates)}" if candidates else "; it takes no hyper-parameters"


def resolve_hyperparameters(loss: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyper-parameter of ``loss`` with the value a call with ``params`` uses (defaults filled in).

    Raises ``HyperparameterError`` naming ``loss.<key>`` for an unknown key (with the nearest valid
    one), a missing value without a default, a non-number where the default is a number or a range is
    declared, a NaN or infinite value, or a value outside the loss's declared ``ranges``.
    """
    name = loss_name(loss)
    accepted = hyperparameters(loss)
    for key in params:
        if key not in accepted:
            raise HyperparameterError(f"loss {name!r} has no hyper-parameter {key!r}{_nearest(key, accepted)}")
    declared: Mapping[str, Interval] = getattr(loss, "ranges", {}) or {}
    resolved: dict[str, Any] = {}
    for key, p in accepted.items():
        if key in params:
            value = params[key]
        elif p.default is inspect.Parameter.empty:
            raise HyperparameterError(f"loss {name!r} needs hyper-parameter {key!r}: set loss.{key}=...")
        else:
            value = p.default
        numeric = key in declared or finite_number(p.default) is not None
        if numeric:
            number = finite_number(value)
            if number is None:
                raise HyperparameterError(f"loss.{key}: expected a number for loss {name!r}, got {value!r}")
            interval = declared.get(key, Interval(-math.inf, math.inf, False, False))
            if number not in interval:
                why = f" ({WHY[key]})" if key in WHY else ""
                raise HyperparameterError(f"loss.{key}={value!r} is outside {interval}, the range loss {name!r} "
                                          f"allows{why}")
        resolved[key] = value
    return resolved


# --------------------------------------------------------------------------------------------------
# inputs


class LossInputs(NamedTuple):
    """Which tensor inputs a loss takes and must get, for given hyper-parameters."""

    accepted: frozenset[str]  # tensor inputs in its signature
    required: frozenset[str]  # those it must get (``requires``, or ``requires_for(params)``)

    @property
    def needs_reference(self) -> bool:
        """Whether the reference model must be run (a reference input is required)."""
        return bool(self.required & REFERENCE_INPUTS)


def required_inputs(loss: Callable[..., Any], params: Mapping[str, Any]) -> frozenset[str]:
    """The tensor inputs ``loss`` must get when called with hyper-parameters ``params``."""
    requires_for = getattr(loss, "requires_for", None)
    if requires_for is not None:
        defaults = {k: p.default for k, p in hyperparameters(loss).items()}
        return frozenset(requires_for({**defaults, **params}))
    return frozenset(getattr(loss, "requires", frozenset()))


def loss_inputs(loss: Callable[..., Any], params: Mapping[str, Any]) -> LossInputs:
    """``LossInputs(accepted, required)`` of ``loss`` for hyper-parameters ``params``; read from the
    declarations (signature, ``requires``, ``requires_for``), never by calling the loss."""
    accepted = frozenset(inspect.signature(loss).parameters) & LOSS_TENSOR_INPUTS
    return LossInputs(accepted, required_inputs(loss, params))


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


def check_multi_inputs(name: str, requires: frozenset[str], args: dict[str, Any]) -> torch.dtype:
    """Multi-response inputs: required ones present, ``logps`` of shape (B, k >= 2), the others the same
    shape, lengths positive. Returns the compute dtype."""
    missing = sorted(k for k in requires if args.get(k) is None)
    if missing:
        raise MissingInputError(f"loss {name!r} needs input(s) {', '.join(missing)} (got None)")
    logps = args["logps"]
    if logps.dim() != 2 or logps.shape[1] < 2:
        raise UserError(f"loss {name!r}: logps must have shape (B, k) with k >= 2, got {tuple(logps.shape)}")
    for k, v in args.items():
        if torch.is_tensor(v) and k in ("lengths", "scores", "ref_logps") and v.shape != logps.shape:
            raise UserError(f"loss {name!r}: {k} has shape {tuple(v.shape)}, logps has {tuple(logps.shape)}")
    lengths = args.get("lengths")
    if lengths is not None and bool((lengths <= 0).any()):
        raise UserError(f"loss {name!r}: lengths must be positive")
    return compute_dtype(*(v for v in args.values() if torch.is_tensor(v)))


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
