"""AlphaPO gradient analysis as code (AlphaPO paper, section 3.3 and appendices A.1-A.5).

For one training pair and a generic scalar weight ``v`` the paper splits the AlphaPO loss gradient into

    |dl/dv| = T1(alpha) * T2(alpha)                                                     (eq. 6)
    T1 = beta / (1 + exp(delta_r - gamma))                                              (eq. 7)
    T2 = | exp(alpha c_w) dpi_w / (pi_w |y_w|) - exp(alpha c_l) dpi_l / (pi_l |y_l|) |  (eq. 8)

with ``c = -log(pi) / |y|`` (minus the average token log-likelihood), ``dpi = d pi / dv`` and
``delta_r = r_alpha(w) - r_alpha(l) = (beta/alpha) (exp(alpha c_l) - exp(alpha c_w))``.
T1 is how much the Bradley-Terry link still "wants" the pair (it dies once the pair is well separated);
T2 is the reward shape's leverage on the likelihoods. They move in opposite directions with ``alpha``,
which is why the gradient magnitude is non-monotonic in ``alpha`` (Theorem 3.1, illustrations 1 and 2).

Everything here is plain float64 numpy, vectorised by broadcasting, and computed in log space:

- ``delta_r = beta * m * exp(max(alpha c_w, alpha c_l)) * phi(-|alpha m|)`` with the length-normalised
  margin ``m = c_l - c_w`` and ``phi(z) = expm1(z)/z`` (``phi(0) = 1``). This is the paper's expression
  with the larger exponent factored out: no ``1/alpha`` (so ``alpha -> 0`` gives SimPO's ``beta * m``
  continuously) and no ``inf - inf``.
- ``log T1 = log beta - softplus(delta_r - gamma)`` and ``log T2`` factor out the larger of the two
  exponents of eq. 8, so ``log|dl/dv|`` is finite even where ``T1`` underflows to 0 and ``T2``
  overflows (illustration 1 at large ``alpha``, or the Figure 6 surface at ``|y| = 1``).

Also here: the reward shape (eq. 3) and its derivative (eq. 5 / eq. 32), the Theorem 3.2 condition,
``alpha_zero`` of Corollary 3.3 (eq. 10) and a numerical check of Lemma A.1.

Deviations: ``alpha_zero`` corrects an inverted gradient ratio in the paper's eq. 10 (see its docstring);
``alpha_zero_as_printed`` keeps the printed form. Otherwise none in the formulas. We additionally return
the *signed* gradient ``dl/dv = -T1 * S`` where
``S`` is the quantity inside the absolute value of eq. 8, and ``log|dl/dv|`` for plots.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from alphapo.errors import UserError

__all__ = [
    "GradientTerms",
    "ILLUSTRATIONS",
    "ILLUSTRATION_ALPHAS",
    "alpha_zero",
    "alpha_zero_as_printed",
    "gradient_terms",
    "lemma_a1_predicts_decreasing",
    "preferred_likelihood_increases",
    "reward",
    "reward_derivative",
    "reward_derivative_is_decreasing",
]

# The paper's two toy examples (section 3.3): beta=1, gamma=0, |y_w|=|y_l|=1, dpi_w=dpi_l=1.
ILLUSTRATIONS: dict[str, dict[str, float]] = {
    "illustration 1 (positive margin)": dict(
        beta=1.0, gamma=0.0, logp_w=-1.0, logp_l=-2.0, len_w=1.0, len_l=1.0, dpi_w=1.0, dpi_l=1.0
    ),
    "illustration 2 (negative margin)": dict(
        beta=1.0, gamma=0.0, logp_w=-2.0, logp_l=-1.0, len_w=1.0, len_l=1.0, dpi_w=1.0, dpi_l=1.0
    ),
}
ILLUSTRATION_ALPHAS = (-2.0, 0.0, 0.25, 1.0, 2.0)


class GradientTerms(NamedTuple):
    """The factors of the AlphaPO per-pair gradient (all float64, broadcast shape of the inputs).

    t1: ``T1`` of eq. 7 (``beta * sigma(gamma - delta_r)``), in ``[0, beta]``.
    t2: ``T2`` of eq. 8 (``>= 0``; may be ``inf`` where it overflows float64).
    abs_grad: ``|dl/dv| = T1 * T2`` (eq. 6), computed as ``exp(log_abs_grad)`` so it never is ``0 * inf``.
    grad: the signed ``dl/dv`` (negative: a gradient step increases ``v``).
    log_abs_grad: natural log of ``|dl/dv|``, finite even where ``abs_grad`` under/overflows.
    delta_r: ``r_alpha(w) - r_alpha(l)`` (the BT logit before the margin ``gamma``).
    margin: length-normalised margin ``log(pi_w)/|y_w| - log(pi_l)/|y_l|`` (= ``c_l - c_w``).
    """

    t1: np.ndarray | float
    t2: np.ndarray | float
    abs_grad: np.ndarray | float
    grad: np.ndarray | float
    log_abs_grad: np.ndarray | float
    delta_r: np.ndarray | float
    margin: np.ndarray | float


def _phi(z: np.ndarray) -> np.ndarray:
    """``expm1(z) / z`` with ``phi(0) = 1``: the entire function that removes AlphaPO's ``1/alpha``."""
    safe = np.where(z == 0.0, 1.0, z)
    return np.where(z == 0.0, 1.0, np.expm1(safe) / safe)


def _out(x: np.ndarray) -> np.ndarray | float:
    return float(x) if np.ndim(x) == 0 else x


def _check(beta=None, len_w=None, len_l=None, logp_w=None, logp_l=None) -> None:
    if beta is not None and np.any(np.asarray(beta) <= 0):
        raise UserError(f"beta must be > 0 (got {beta!r})")
    for name, length in (("len_w", len_w), ("len_l", len_l)):
        if length is not None and np.any(np.asarray(length) <= 0):
            raise UserError(f"{name} (a response length |y|) must be > 0 (got {length!r})")
    for name, logp in (("logp_w", logp_w), ("logp_l", logp_l)):
        if logp is not None and np.any(np.asarray(logp) > 0):
            raise UserError(f"{name} is a log-probability and must be <= 0 (got {logp!r})")


def reward(alpha, *, beta, logp, length):
    """AlphaPO reward ``r_alpha = (beta/alpha) * (1 - pi^(-alpha/|y|))`` (AlphaPO eq. 3).

    Written as ``beta * s * phi(-alpha * s)`` with ``s = logp/|y|`` so that ``alpha = 0`` is SimPO's
    ``beta * s`` exactly. Broadcasts over array inputs; float64. Overflows to ``-inf`` only where the
    true value is below ``-1.8e308``.
    Deviations: none.
    """
    _check(beta=beta, len_w=length, logp_w=logp)
    s = np.asarray(logp, dtype=np.float64) / np.asarray(length, dtype=np.float64)
    a = np.asarray(alpha, dtype=np.float64)
    with np.errstate(over="ignore"):
        return _out(np.asarray(beta, dtype=np.float64) * s * _phi(-a * s))


def reward_derivative(alpha, *, beta, logp, length):
    """``r'_alpha(pi) = d r_alpha / d pi = beta * pi^(-(alpha/|y| + 1)) / |y|`` (AlphaPO eq. 5 = eq. 32).

    Takes ``logp = log pi`` (so tiny probabilities are fine); broadcasts; float64.
    Deviations: none.
    """
    _check(beta=beta, len_w=length, logp_w=logp)
    length = np.asarray(length, dtype=np.float64)
    expo = -(np.asarray(alpha, dtype=np.float64) / length + 1.0) * np.asarray(logp, dtype=np.float64)
    with np.errstate(over="ignore"):
        return _out(np.asarray(beta, dtype=np.float64) / length * np.exp(expo))


def gradient_terms(alpha, *, beta, gamma, logp_w, logp_l, len_w, len_l, dpi_w=1.0, dpi_l=1.0):
    """``T1``, ``T2`` and ``|dl/dv|`` of the AlphaPO loss for one pair (AlphaPO eqs. 6-8).

    Args (all broadcast together, any shape, float64 internally):
        alpha: reward-shape parameter (``0`` = SimPO, continuous there).
        beta, gamma: reward scale (> 0) and BT margin (absolute).
        logp_w, logp_l: ``log pi(y_w)``, ``log pi(y_l)`` summed over tokens (<= 0).
        len_w, len_l: ``|y_w|``, ``|y_l|`` (> 0).
        dpi_w, dpi_l: ``d pi_w / dv`` and ``d pi_l / dv`` -- derivatives of the *probabilities*, as in the
            paper (not of the log-probabilities).

    Returns ``GradientTerms`` (python floats if every input is a scalar).

    Example (illustration 1 at alpha=0, by hand): ``c_w=1, c_l=2``, ``delta_r = 1``,
    ``T1 = 1/(1+e) = 0.2689``, ``T2 = |e^1 - e^2| = 4.6708``, ``|dl/dv| = 1.2561`` (paper: 0.27, 4.67, 1.26).
    Deviations: none (see the module docstring for the log-space evaluation).
    """
    _check(beta=beta, len_w=len_w, len_l=len_l, logp_w=logp_w, logp_l=logp_l)
    a, beta, gamma, lw, ll, nw, nl, dw, dl = np.broadcast_arrays(
        *(
            np.asarray(x, dtype=np.float64)
            for x in (alpha, beta, gamma, logp_w, logp_l, len_w, len_l, dpi_w, dpi_l)
        )
    )
    c_w, c_l = -lw / nw, -ll / nl
    margin = c_l - c_w
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # delta_r = (beta/alpha)(e^{a c_l} - e^{a c_w}) with the larger exponent factored out.
        top = np.maximum(a * c_w, a * c_l)
        delta_r = np.where(margin == 0.0, 0.0, beta * margin * np.exp(top) * _phi(-np.abs(a * margin)))
        log_sig = -np.logaddexp(0.0, delta_r - gamma)  # log sigma(gamma - delta_r), <= 0
        log_t1 = np.log(beta) + log_sig
        # S = (dpi_w/|y_w|) e^{x_w} - (dpi_l/|y_l|) e^{x_l}, x = alpha c - log pi = c (alpha + |y|).
        # Scale by the larger |term| (prefactor included) so the larger one is exactly +-1: no subnormals.
        x_w = a * c_w - lw + np.log(np.abs(dw)) - np.log(nw)
        x_l = a * c_l - ll + np.log(np.abs(dl)) - np.log(nl)
        big = np.maximum(x_w, x_l)
        big = np.where(np.isneginf(big), 0.0, big)  # dpi_w = dpi_l = 0: T2 = 0
        inner = np.sign(dw) * np.exp(x_w - big) - np.sign(dl) * np.exp(x_l - big)
        log_t2 = big + np.log(np.abs(inner))
        log_abs_grad = log_t1 + log_t2
        abs_grad = np.exp(log_abs_grad)
        grad = -np.sign(inner) * abs_grad
        t1, t2 = beta * np.exp(log_sig), np.exp(log_t2)  # t1 <= beta exactly
    return GradientTerms(*(_out(x) for x in (t1, t2, abs_grad, grad, log_abs_grad, delta_r, margin)))


def preferred_likelihood_increases(alpha, *, logp_w, logp_l, len_w, len_l, sq_norm_w, inner_wl):
    """Theorem 3.2 (eq. 9): under gradient flow ``d pi_w/dt >= 0`` iff ``r'(pi_w)/r'(pi_l) >= <.,.>/||.||^2``.

    ``sq_norm_w = ||grad pi_w||^2`` (> 0), ``inner_wl = <grad pi_w, grad pi_l>``. Evaluated in log space
    via eq. 25: ``r'_w/r'_l = (pi_l |y_l|)/(pi_w |y_w|) * exp(-alpha * margin)``. Broadcasts; returns bool.
    Deviations: none (``beta`` cancels in the ratio, so it is not an argument).
    """
    _check(len_w=len_w, len_l=len_l, logp_w=logp_w, logp_l=logp_l)
    sq_norm_w, inner_wl = np.asarray(sq_norm_w, np.float64), np.asarray(inner_wl, np.float64)
    if np.any(sq_norm_w <= 0):
        raise UserError("Theorem 3.2 needs ||grad pi_w|| != 0 (sq_norm_w must be > 0)")
    margin = np.asarray(logp_w, np.float64) / len_w - np.asarray(logp_l, np.float64) / len_l
    log_ratio = (
        np.asarray(logp_l, np.float64)
        + np.log(len_l)
        - np.asarray(logp_w, np.float64)
        - np.log(len_w)
        - np.asarray(alpha, np.float64) * margin
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        rhs = inner_wl / sq_norm_w
        result = np.where(rhs <= 0, True, log_ratio >= np.log(np.where(rhs > 0, rhs, 1.0)))
    return bool(result) if result.ndim == 0 else result


def alpha_zero(*, logp_w, logp_l, len_w, len_l, sq_norm_w, inner_wl):
    """``alpha_0`` of Corollary 3.3: the alpha at which Theorem 3.2's condition (eq. 9) holds with equality.

        alpha_0 = -log( <grad pi_w, grad pi_l> / ||grad pi_w||^2 * (pi_w |y_w|)/(pi_l |y_l|) )
                  / ( log(pi_w)/|y_w| - log(pi_l)/|y_l| )

    If the length-normalised margin is negative, ``pi_w`` increases under gradient flow for
    ``alpha >= alpha_0``; if it is positive, for ``alpha <= alpha_0`` (the corollary's statement).
    With a scalar weight ``v`` use ``sq_norm_w = dpi_w**2`` and ``inner_wl = dpi_w * dpi_l``; then
    ``alpha_0`` is exactly where the two terms inside eq. 8 are equal, i.e. ``T2(alpha_0) = 0`` and the
    signed gradient changes sign.

    Example (illustrations 1 and 2, by hand): ``dpi=1, |y|=1`` gives ``-log(pi_w/pi_l) / log(pi_w/pi_l)
    = -1``; indeed ``T2(-1) = |e^0 - e^0| = 0``.

    Deviations: the paper's eq. 10 (= eq. 31) has the gradient ratio inverted,
    ``||grad pi_w||^2 / <grad pi_w, grad pi_l>``. Dividing eq. 26 by ``pi_l|y_l| / (pi_w|y_w|)`` gives
    ``exp(-alpha m) >= <.,.>/||.||^2 * pi_w|y_w|/(pi_l|y_l|)``, not the paper's eq. 27. The two agree only
    when ``<.,.> = ||grad pi_w||^2`` (as in both illustrations, ``dpi_w = dpi_l``). We implement the
    version consistent with Theorem 3.2 and verified against autograd of our loss
    (tests/analysis/test_autograd.py); ``alpha_zero_as_printed`` gives eq. 10 verbatim for comparison.
    Raises ``UserError`` where the corollary does not apply: ``inner_wl <= 0`` (then ``pi_w`` increases for
    every alpha, Theorem 3.2), ``sq_norm_w <= 0``, or a zero margin (the condition does not depend on alpha).
    Inputs broadcast; the log of the product is taken as a sum of logs (no overflow).
    """
    log_ratio, margin = _alpha_zero_parts(logp_w, logp_l, len_w, len_l, sq_norm_w, inner_wl)
    return _out(-log_ratio / margin)


def alpha_zero_as_printed(*, logp_w, logp_l, len_w, len_l, sq_norm_w, inner_wl):
    """AlphaPO eq. 10 exactly as printed (gradient ratio ``||grad pi_w||^2 / <.,.>``); see ``alpha_zero``.

    Kept only to document the discrepancy: it does not satisfy Theorem 3.2's equality unless
    ``inner_wl == sq_norm_w``.
    """
    log_ratio, margin = _alpha_zero_parts(logp_w, logp_l, len_w, len_l, sq_norm_w, inner_wl)
    return _out(-(log_ratio + 2.0 * (np.log(sq_norm_w) - np.log(inner_wl))) / margin)


def _alpha_zero_parts(logp_w, logp_l, len_w, len_l, sq_norm_w, inner_wl):
    """``log(<.,.>/||.||^2 * pi_w|y_w|/(pi_l|y_l|))`` and the length-normalised margin, with input checks."""
    _check(len_w=len_w, len_l=len_l, logp_w=logp_w, logp_l=logp_l)
    sq_norm_w, inner_wl = np.asarray(sq_norm_w, np.float64), np.asarray(inner_wl, np.float64)
    if np.any(sq_norm_w <= 0):
        raise UserError("Corollary 3.3 needs ||grad pi_w|| != 0 (sq_norm_w must be > 0)")
    if np.any(inner_wl <= 0):
        raise UserError(
            "Corollary 3.3 needs <grad pi_w, grad pi_l> > 0 (inner_wl); when it is <= 0, pi_w increases for "
            "every alpha (Theorem 3.2) and alpha_0 is not defined"
        )
    logp_w, logp_l = np.asarray(logp_w, np.float64), np.asarray(logp_l, np.float64)
    margin = logp_w / len_w - logp_l / len_l
    if np.any(margin == 0):
        raise UserError(
            "alpha_0 is undefined for a zero length-normalised margin (log pi_w/|y_w| = log pi_l/|y_l|)"
        )
    log_ratio = np.log(inner_wl) - np.log(sq_norm_w) + logp_w + np.log(len_w) - logp_l - np.log(len_l)
    return log_ratio, margin


def lemma_a1_predicts_decreasing(alpha, length) -> bool:
    """Lemma A.1's closed form: ``r'_alpha(pi)`` is (weakly) decreasing on ``(0, 1]`` iff ``alpha >= -|y|``.

    Deviations: none ("decreasing" is weak: at ``alpha = -|y|`` the derivative is the constant ``beta/|y|``).
    """
    return bool(alpha >= -length)


def reward_derivative_is_decreasing(alpha, *, length, beta=1.0, num=401, min_logp=-30.0) -> bool:
    """Numerically check whether ``r'_alpha(pi)`` (eq. 32) is non-increasing in ``pi`` on ``(0, 1]``.

    Evaluates eq. 32 on ``num`` probabilities ``pi = exp(t)``, ``t`` evenly spaced in ``[min_logp, 0]``
    (increasing ``pi``), and returns whether no consecutive step goes up by more than float64 round-off.
    This is the independent side of the Lemma A.1 check: compare it with ``lemma_a1_predicts_decreasing``.
    """
    logp = np.linspace(min_logp, 0.0, num)
    r1 = np.asarray(reward_derivative(alpha, beta=beta, logp=logp, length=length))
    steps = np.diff(r1)
    return bool(np.all(steps <= 1e-12 * np.maximum(np.abs(r1[:-1]), np.abs(r1[1:]))))
