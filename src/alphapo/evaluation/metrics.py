"""Head-to-head metrics: win rate with ties as half, its confidence interval, length-controlled win rate.

All functions are pure (numpy in, numbers out). A *preference* is the judged probability that the model's
response beats the reference's on one prompt: 1 (win), 0.5 (tie), 0 (loss), or anything in between from a
pairwise judge. ``preferences_from_scores`` makes them from two lists of scalar judge scores.

Win rate and confidence interval (``win_rate``)
    win rate = mean preference = (wins + ties / 2) / n. Interval methods:

    - ``"wilson"`` (default): the Wilson score interval for a binomial proportion at p = win rate with n
      trials. With ties a tie contributes variance 0 instead of 1/4, so this interval is *conservative*
      (never narrower than the truth); unlike the normal one it behaves at 0 and 1 (10 wins of 10 gives
      [0.72, 1], not [1, 1]).
    - ``"normal"``: mean +- z * s / sqrt(n) with the sample standard deviation of the preferences (the
      "standard_error" AlpacaEval reports), clipped to [0, 1]. Exact variance with ties, poor near 0 or 1.
    - ``"bootstrap"``: percentile interval over ``n_boot`` resamples of prompts (seeded).

Length-controlled win rate (``length_controlled_win_rate``), after AlpacaEval 2.0 (Dubois et al. 2024,
"Length-Controlled AlpacaEval", ``alpaca_eval/metrics/glm_winrate.py``, GLM ``length_controlled_v1``)
    Fit a logistic regression of the preference on the length difference, then predict with the length
    difference set to zero and average::

        logit P(model beats reference on prompt i) = theta + phi * tanh(d_i / sd(d)) [+ psi * difficulty_i]
        d_i = len(model_i) - len(reference_i)            (characters by default, like AE2)
        LC win rate = mean_i sigmoid(theta [+ psi * difficulty_i])      (phi's term set to 0)

    Soft labels (a tie is y = 0.5) use the cross-entropy with y in [0, 1] directly, which is what AE2's
    duplicate-each-row-with-weights trick computes. Fitted by Newton's method (3 parameters).

    Deviations from AE2: (1) AE2 has an ``instruction_difficulty`` covariate estimated once from the
    whole AlpacaEval leaderboard; we have no leaderboard, so it is optional (pass ``difficulty=`` per
    prompt, e.g. the toy world's known task difficulty) and absent by default. (2) AE2 regularises the
    fit towards "gamed" (verbose / concise prompted) versions of the baseline with weight 0.2; we have no
    such annotations and do not. (3) AE2 uses an L1 penalty with the strength cross-validated
    (``LogisticRegressionCV``, 5 folds); we use a small fixed L2 penalty (``l2=1e-3`` on the mean loss),
    which only matters when the data are separable (e.g. all wins), where it keeps the fit finite.
    (4) AE2 defines d as baseline minus model; the sign only flips phi, the LC win rate is the same.
    A bootstrap over prompts (refitting each time) gives the LC interval, which AE2 does not report.

Paired difference (``paired_difference``)
    Two systems answered the *same* prompts; ``d_i = a_i - b_i`` is the per-prompt difference of any
    per-prompt value (the toy world's gold correctness, a score, a 0/1 outcome). Reported: the mean
    difference ``mean(d)`` and its ``confidence`` interval, computed on the differences, so the
    prompt-to-prompt variation both systems share cancels (the paired design; an unpaired interval on
    the two means would be much wider). Interval methods:

    - ``"bootstrap"`` (default): percentile interval of ``mean(d*)`` over ``n_boot`` resamples of
      prompts with replacement, from ``numpy.random.default_rng(seed)`` (the same seed gives the same
      interval).
    - ``"normal"``: ``mean(d) +- z * sd(d) / sqrt(n)`` with the sample standard deviation (``ddof=1``),
      the large-sample paired t interval (at n = 2000 the t and normal quantiles differ in the 4th digit:
      1.9612 vs 1.9600). Deviation: not the Student-t quantile (that needs scipy, which is not a
      dependency), so it is slightly too narrow for small n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from alphapo.errors import UserError

__all__ = [
    "WinRate",
    "LengthControlledWinRate",
    "preferences_from_scores",
    "win_rate",
    "wilson_interval",
    "fit_length_glm",
    "length_controlled_win_rate",
    "PairedDifference",
    "paired_difference",
]


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _as_preferences(preferences: Sequence[float]) -> np.ndarray:
    p = np.asarray(preferences, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise UserError("no preferences: need at least one judged prompt")
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise UserError("preferences must be finite numbers in [0, 1] (1 win, 0.5 tie, 0 loss)")
    return p


def preferences_from_scores(model_scores: Sequence[float], reference_scores: Sequence[float], *,
                            tie_tol: float = 0.0) -> np.ndarray:
    """1 where the model's score is higher, 0 where lower, 0.5 where |difference| <= ``tie_tol``. Shape (n,).

    Non-finite scores are an error (a NaN would otherwise read as a loss for the model).
    """
    m = np.asarray(model_scores, dtype=np.float64)
    r = np.asarray(reference_scores, dtype=np.float64)
    if m.shape != r.shape:
        raise UserError(f"model and reference scores differ in length: {m.size} vs {r.size}")
    for name, s in (("model", m), ("reference", r)):
        # A NaN score compares False both ways, so it would silently count as a loss for the model.
        bad = np.flatnonzero(~np.isfinite(s))
        if bad.size:
            raise UserError(f"{bad.size} non-finite {name} judge score(s) (first at prompt {int(bad[0])}: "
                            f"{s[bad[0]]}); check the judge")
    diff = m - r
    return np.where(np.abs(diff) <= tie_tol, 0.5, np.where(diff > 0, 1.0, 0.0))


def wilson_interval(p_hat: float, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    z = _z(confidence)
    denom = 1 + z * z / n
    center = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class WinRate:
    """Win rate (ties half) with a confidence interval; ``n_wins``/``n_ties``/``n_losses`` count p >, =, < 0.5."""

    win_rate: float
    ci_low: float
    ci_high: float
    n: int
    n_wins: int
    n_ties: int
    n_losses: int
    method: str
    confidence: float

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def to_dict(self) -> dict:
        return asdict(self)


def win_rate(preferences: Sequence[float], *, confidence: float = 0.95, method: str = "wilson",
             n_boot: int = 2000, seed: int = 0) -> WinRate:
    """Mean preference (ties count half) and its ``confidence`` interval; see the module docstring."""
    p = _as_preferences(preferences)
    n = p.size
    rate = float(p.mean())
    if method == "wilson":
        lo, hi = wilson_interval(rate, n, confidence=confidence)
    elif method == "normal":
        sd = float(p.std(ddof=1)) if n > 1 else 0.0
        half = _z(confidence) * sd / math.sqrt(n)
        lo, hi = max(0.0, rate - half), min(1.0, rate + half)
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = p[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        alpha = (1 - confidence) / 2
        lo, hi = (float(x) for x in np.quantile(means, [alpha, 1 - alpha]))
    else:
        raise UserError(f"unknown CI method {method!r}; use 'wilson', 'normal' or 'bootstrap'")
    return WinRate(rate, lo, hi, n, int((p > 0.5).sum()), int((p == 0.5).sum()), int((p < 0.5).sum()),
                   method, confidence)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def fit_logistic(X: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, max_iter: int = 100,
                 tol: float = 1e-10) -> np.ndarray:
    """Minimise mean_i [softplus(x_i.b) - y_i x_i.b] + l2/2 |b|^2 (soft labels y in [0,1]) by Newton's method.

    Shapes: X (n, p), y (n,) -> b (p,). The objective is convex; step halving keeps every step downhill.
    """
    n, d = X.shape
    beta = np.zeros(d)

    def objective(b):
        z = X @ b
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * b @ b)

    f = objective(beta)
    for _ in range(max_iter):
        mu = _sigmoid(X @ beta)
        grad = X.T @ (mu - y) / n + l2 * beta
        hess = (X * (mu * (1 - mu))[:, None]).T @ X / n + l2 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            candidate = beta - t * step
            f_new = objective(candidate)
            if f_new <= f + 1e-15 or t < 1e-8:
                break
            t /= 2
        beta, f_prev, f = candidate, f, f_new
        if abs(f_prev - f) < tol and np.max(np.abs(t * step)) < 1e-8:
            break
    return beta


def fit_length_glm(preferences: np.ndarray, delta_len: np.ndarray, difficulty: np.ndarray | None = None,
                   *, l2: float = 1e-3) -> tuple[np.ndarray, dict[str, float]]:
    """Fit the AE2-style GLM; returns (predicted LC preference per prompt (n,), coefficients).

    Features: intercept theta, tanh(d / sd(d)) (sd with ddof=1, as pandas; a zero sd gives a zero feature),
    optional difficulty. The LC prediction sets the tanh feature to 0.
    """
    sd = float(np.std(delta_len, ddof=1)) if delta_len.size > 1 else 0.0
    cols = {"intercept": np.ones_like(preferences)}
    if sd > 0:  # all length differences equal: the length term is not identifiable; leave it out (phi = 0)
        cols["length"] = np.tanh(delta_len / sd)
    if difficulty is not None:
        cols["difficulty"] = np.asarray(difficulty, dtype=np.float64)
    X = np.stack(list(cols.values()), axis=1)
    beta = fit_logistic(X, preferences, l2=l2)
    coefs = {"intercept": 0.0, "length": 0.0, **dict(zip(cols, (float(b) for b in beta))), "length_sd": sd}
    X_lc = X.copy()
    if "length" in cols:
        X_lc[:, 1] = 0.0  # the counterfactual: same length as the reference
    return _sigmoid(X_lc @ beta), coefs


@dataclass(frozen=True)
class LengthControlledWinRate:
    """LC win rate (AE2-style GLM), its bootstrap CI (None if ``n_boot=0``), the raw win rate, coefficients."""

    lc_win_rate: float
    ci_low: float | None
    ci_high: float | None
    win_rate: float
    coefficients: dict[str, float]
    n: int

    @property
    def ci(self) -> tuple[float | None, float | None]:
        return (self.ci_low, self.ci_high)

    def to_dict(self) -> dict:
        return asdict(self)


def length_controlled_win_rate(preferences: Sequence[float], model_lengths: Sequence[float],
                               reference_lengths: Sequence[float], *,
                               difficulty: Sequence[float] | None = None, l2: float = 1e-3,
                               n_boot: int = 200, confidence: float = 0.95,
                               seed: int = 0) -> LengthControlledWinRate:
    """Length-controlled win rate: the win rate predicted at zero length difference (see module docstring).

    Shapes: all inputs (n,). ``n_boot`` > 0 adds a percentile bootstrap interval over prompts (each
    resample refits the GLM; ``seed`` fixes the resamples).
    """
    p = _as_preferences(preferences)
    lm = np.asarray(model_lengths, dtype=np.float64)
    lr = np.asarray(reference_lengths, dtype=np.float64)
    if not p.shape == lm.shape == lr.shape:
        raise UserError(f"preferences, model_lengths and reference_lengths must have the same length, got "
                        f"{p.size}, {lm.size}, {lr.size}")
    diff = None
    if difficulty is not None:
        diff = np.asarray(difficulty, dtype=np.float64)
        if diff.shape != p.shape:
            raise UserError(f"difficulty has {diff.size} values for {p.size} prompts")
    delta = lm - lr
    pred, coefs = fit_length_glm(p, delta, diff, l2=l2)
    lo = hi = None
    if n_boot > 0 and p.size > 1:
        rng = np.random.default_rng(seed)
        stats = []
        for _ in range(n_boot):
            idx = rng.integers(0, p.size, size=p.size)
            pred_b, _ = fit_length_glm(p[idx], delta[idx], None if diff is None else diff[idx], l2=l2)
            stats.append(pred_b.mean())
        alpha = (1 - confidence) / 2
        lo, hi = (float(x) for x in np.quantile(stats, [alpha, 1 - alpha]))
    return LengthControlledWinRate(float(pred.mean()), lo, hi, float(p.mean()), coefs, int(p.size))


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-prompt difference ``mean(a - b)`` with a ``confidence`` interval (see the module docstring)."""

    diff: float
    ci_low: float
    ci_high: float
    n: int
    method: str
    confidence: float

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict:
        return {"diff": self.diff, "ci": [self.ci_low, self.ci_high], "n": self.n, "method": self.method,
                "confidence": self.confidence}


def paired_difference(values_a: Sequence[float], values_b: Sequence[float], *, confidence: float = 0.95,
                      method: str = "bootstrap", n_boot: int = 2000, seed: int = 0) -> PairedDifference:
    """Mean of ``a_i - b_i`` over prompts and its paired ``confidence`` interval (module docstring)."""
    a = np.asarray(values_a, dtype=np.float64).reshape(-1)
    b = np.asarray(values_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise UserError(f"paired difference needs one value per prompt on both sides: got {a.size} and {b.size}")
    if a.size == 0:
        raise UserError("paired difference: no prompts")
    for name, v in (("first", a), ("second", b)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise UserError(f"paired difference: non-finite value in the {name} system at prompt {int(bad[0])}")
    d = a - b
    n = d.size
    mean = float(d.mean())
    if method == "bootstrap":
        _z(confidence)  # validates confidence
        if n_boot < 1:
            raise UserError(f"n_boot must be >= 1, got {n_boot}")
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        alpha = (1 - confidence) / 2
        lo, hi = (float(x) for x in np.quantile(means, [alpha, 1 - alpha]))
    elif method == "normal":
        half = _z(confidence) * (float(d.std(ddof=1)) if n > 1 else 0.0) / math.sqrt(n)
        lo, hi = mean - half, mean + half
    else:
        raise UserError(f"unknown paired CI method {method!r}; use 'bootstrap' or 'normal'")
    return PairedDifference(mean, lo, hi, n, method, confidence)
