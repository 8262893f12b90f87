"""Judge specs for the command line: ``make_judge("hf:PATH")``, ``make_judge("length")``,
``make_judge("py:module:attr")``.

A spec is ``prefix`` or ``prefix:argument``; ``register_judge(prefix, factory)`` makes
``make_judge(f"{prefix}:{arg}")`` return ``factory(arg)``. The built-ins are registered here; higher
layers register their own explicitly (the ``alphapo`` command calls ``alphapo.toyworld.register_judges``,
which adds ``toy-gold`` and ``toy-proxy``), so this module imports nothing above ``generation``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from alphapo.errors import UserError
from alphapo.generation.hf_judge import HFRewardJudge
from alphapo.generation.judges import LengthJudge

__all__ = ["register_judge", "make_judge", "available_judges"]

JudgeFactory = Callable[[str], Any]
_REGISTRY: dict[str, tuple[JudgeFactory, str]] = {}


def register_judge(prefix: str, factory: JudgeFactory, *, help: str = "") -> None:
    """Make ``make_judge(f"{prefix}:{arg}")`` return ``factory(arg)`` (``arg`` is "" for a bare prefix).

    The factory returns a ``Judge`` or a ``PairwiseJudge``. Re-registering a prefix replaces it.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"judge prefix must be non-empty and contain no ':', got {prefix!r}")
    _REGISTRY[prefix] = (factory, help)


def available_judges() -> dict[str, str]:
    """``{prefix: help}`` for every registered judge spec."""
    return {k: h for k, (_, h) in sorted(_REGISTRY.items())}


def make_judge(spec: str) -> Any:
    """Build a judge from a spec string: ``hf:PATH``, ``length``, ``py:MODULE:ATTR``, ``toy-gold``...

    Raises ``UserError`` listing the known prefixes when the prefix is unknown.
    """
    prefix, _, arg = spec.partition(":")
    if prefix not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UserError(f"unknown judge {spec!r}: the prefix {prefix!r} is not registered; known: {known} "
                        "(in Python, alphapo.toyworld.register_judges() adds the toy world's judges)")
    factory, _ = _REGISTRY[prefix]
    return factory(arg)


def _hf_factory(arg: str) -> HFRewardJudge:
    if not arg:
        raise UserError("judge spec 'hf' needs a path: hf:PATH (a local sequence-classification model)")
    return HFRewardJudge(arg)


def _py_factory(arg: str) -> Any:
    module_name, _, attr = arg.partition(":")
    if not module_name or not attr:
        raise UserError(f"judge spec 'py:{arg}' must be py:MODULE:ATTR (ATTR a judge or a no-argument factory)")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"judge spec 'py:{arg}': cannot load {attr!r} from {module_name!r}: {err}") from err
    if isinstance(obj, type) or not (hasattr(obj, "score") or hasattr(obj, "compare")):
        obj = obj()  # a class or a factory function
    return obj


def _length_factory(arg: str) -> LengthJudge:
    try:
        return LengthJudge(float(arg) if arg else 1.0)
    except ValueError as err:
        raise UserError(f"judge spec 'length:{arg}': the argument must be a number (score per character)") from err


register_judge("hf", _hf_factory, help="hf:PATH - a local Hugging Face sequence-classification reward model")
register_judge("length", _length_factory, help="length[:PER_CHAR] - response length in characters (sanity judge)")
register_judge("py", _py_factory, help="py:MODULE:ATTR - a judge object, or a factory called with no arguments")
