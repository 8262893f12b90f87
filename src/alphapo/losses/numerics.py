"""Numerically safe building blocks shared by the reward shapes and links.

Why a module of its own: the AlphaPO reward ``(beta/alpha) * (1 - exp(-alpha*u))`` is a difference of
exponentials divided by a parameter that may be zero. Written naively (TRL 1.16 computes
``exp(logp) ** -alpha``) it overflows once ``alpha * |u|`` passes ~88 in float32, loses all precision
when the two exponentials are close, and divides 0 by 0 at ``alpha = 0``. The helpers below avoid the
three problems:

- ``phi(z) = expm1(z) / z`` with ``phi(0) = 1`` exactly, so ``beta * u * phi(-alpha*u)`` *is*
  ``beta * u`` at ``alpha = 0`` (no branch on alpha, no ``1/alpha``) and is smooth around it;
- ``exp_capped(z)`` is ``exp(z)`` up to ``MAX_EXPONENT`` and continues *linearly* beyond it
  (``e^M * (1 + z - M)``): value and first derivative are continuous, and both stay finite for every
  finite input, in float32 and bfloat16 (which shares float32's exponent range);
- ``alpha_difference`` returns ``r(u_w) - r(u_l)`` with the larger exponential factored out (see there).

Clamp bound: ``MAX_EXPONENT = 60`` (``exp(60) ~ 1.1e26``). For ``|alpha| <= 20``, ``|u| <= 1000`` and
``beta <= 100`` the reward gap is at most ``100 * 2000 * 1.1e26 * (1 + 2e4) ~ 4.5e35``, and its gradients
are of the same order, so loss and gradients stay below float32's ``3.4e38``. Every exponent of the
AlphaPO paper's regime (``|alpha * s| <= 50``) is below the cap, so there the formulas are the exact
ones (tested against mpmath at 1e-6 relative).
"""

from __future__ import annotations

import torch

MAX_EXPONENT = 60.0
"""Exponents above this are continued linearly instead of exponentially (see ``exp_capped``)."""


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype losses are computed in: at least float32 (bfloat16/float16 are upcast), float64 kept."""
    dtype = torch.float32
    for t in tensors:
        if t is not None and torch.is_tensor(t) and t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def exp_capped(z: torch.Tensor) -> torch.Tensor:
    """``exp(z)`` for ``z <= MAX_EXPONENT``; ``exp(M) * (1 + z - M)`` above (C^1, finite; slope e^M)."""
    zc = z.clamp(max=MAX_EXPONENT)
    # z - zc is 0.0 below the cap, so the result there is exactly torch.exp(z).
    return torch.exp(zc) * (1.0 + (z - zc))


def phi(z: torch.Tensor) -> torch.Tensor:
    """``phi(z) = expm1(z) / z`` with ``phi(0) = 1`` exactly; above ``MAX_EXPONENT`` uses ``exp_capped``.

    The ``torch.where`` trick: the division is done on a copy of ``z`` with zeros replaced by 1, so the
    discarded branch never produces 0/0 (whose NaN gradient would leak through ``where``).
    """
    zero = z == 0
    one = torch.ones_like(z)
    zs = torch.where(zero, one, z)
    zc = zs.clamp(max=MAX_EXPONENT)
    num = torch.expm1(zc) + torch.exp(zc) * (zs - zc)
    return torch.where(zero, one, num / zs)


def _alpha_reward_value(u: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    return beta * u * phi(-alpha * u)


def _alpha_difference_value(u_w: torch.Tensor, u_l: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    du = u_w - u_l
    m = torch.maximum(-alpha * u_w, -alpha * u_l)
    return beta * du * phi(-(alpha * du).abs()) * exp_capped(m)


def _slope(u: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """``r'(u) = beta * exp(-alpha*u)``, the exponent capped at ``MAX_EXPONENT`` (slope of ``exp_capped``)."""
    return beta * torch.exp((-alpha * u).clamp(max=MAX_EXPONENT))


class _AlphaReward(torch.autograd.Function):
    """Forward ``beta*u*phi(-alpha*u)``; backward the closed form ``r'(u) = beta*exp(-alpha*u)``.

    Autograd through ``phi`` would form ``r'`` as ``phi(a) + a*phi'(a)``, two terms of size ``1/|a|`` that
    cancel down to ``e^a``; for ``a = -100`` that leaves rounding noise (even of the wrong sign) instead
    of ``3.7e-44``. The closed form has no cancellation.
    """

    @staticmethod
    def forward(ctx, u, beta, alpha):  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.beta, ctx.alpha = beta, alpha
        return _alpha_reward_value(u, beta, alpha)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * _slope(u, ctx.beta, ctx.alpha), None, None


class _AlphaDifference(torch.autograd.Function):
    """Forward: the factored reward gap (no cancellation); backward: ``r'(u_w)`` and ``-r'(u_l)`` in
    closed form (autograd through the factored form would cancel, like ``_AlphaReward``)."""

    @staticmethod
    def forward(ctx, u_w, u_l, beta, alpha):  # type: ignore[override]
        ctx.save_for_backward(u_w, u_l)
        ctx.beta, ctx.alpha = beta, alpha
        return _alpha_difference_value(u_w, u_l, beta, alpha)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        u_w, u_l = ctx.saved_tensors
        g_w = (grad * _slope(u_w, ctx.beta, ctx.alpha)).sum_to_size(u_w.shape)
        g_l = (-grad * _slope(u_l, ctx.beta, ctx.alpha)).sum_to_size(u_l.shape)
        return g_w, g_l, None, None


def _is_plain_number(x: object) -> bool:
    return isinstance(x, (int, float)) or (torch.is_tensor(x) and not x.requires_grad)


def alpha_reward(u: torch.Tensor, *, beta: float, alpha: float) -> torch.Tensor:
    """AlphaPO reward ``(beta/alpha) * (1 - exp(-alpha*u))`` written as ``beta * u * phi(-alpha*u)``.

    AlphaPO eq. (3) (with ``u = s = logp/|y|``). At ``alpha = 0`` this is exactly ``beta * u``. The
    gradient with respect to ``u`` is the closed form ``beta * exp(-alpha*u)`` (exponent capped at
    ``MAX_EXPONENT``). ``beta`` and ``alpha`` are hyper-parameters; if given as tensors that require
    grad, plain autograd is used instead (so they can be learned, at the cost of the cancellation above).
    """
    if _is_plain_number(beta) and _is_plain_number(alpha):
        return _AlphaReward.apply(u, beta, alpha)
    return _alpha_reward_value(u, beta, alpha)


def alpha_difference(u_w: torch.Tensor, u_l: torch.Tensor, *, beta: float, alpha: float) -> torch.Tensor:
    """``r(u_w) - r(u_l)`` for the alpha shape, without overflow or cancellation.

    With ``a = -alpha*u`` the difference is ``(beta/alpha)(e^{a_l} - e^{a_w})``. Factoring out the larger
    exponential ``m = max(a_w, a_l)`` and using ``a_w - a_l = -alpha (u_w - u_l)``:

        r_w - r_l = beta * (u_w - u_l) * phi(-|alpha * (u_w - u_l)|) * exp(m)

    ``phi`` of a non-positive argument lies in (0, 1], so only ``exp(m)`` can be large (capped by
    ``exp_capped`` above ``MAX_EXPONENT``); ``u_w - u_l`` is formed before any exponential, so nearly equal
    rewards do not cancel. At ``alpha = 0`` every factor after ``beta * (u_w - u_l)`` is exactly 1, so the
    result is bit-identical to the log shape's ``beta * (u_w - u_l)``. Gradients are the closed forms
    ``beta*exp(-alpha*u_w)`` and ``-beta*exp(-alpha*u_l)`` (see ``_AlphaDifference``). Above the cap the
    forward and backward are each continued (linearly / constantly), both finite and of the right sign.
    """
    if _is_plain_number(beta) and _is_plain_number(alpha):
        return _AlphaDifference.apply(u_w, u_l, beta, alpha)
    return _alpha_difference_value(u_w, u_l, beta, alpha)
