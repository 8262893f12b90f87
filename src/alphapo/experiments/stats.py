"""Statistics of the results table: means with Student-t 95% intervals, paired per-prompt differences.

Pure functions on plain lists (no scipy: the Student-t quantile is computed here, see ``t_quantile``).

- ``mean_ci(values)``: the mean over seeds and the two-sided t-interval
  ``mean +- t_{1-(1-c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation (n - 1 in the
  denominator). With one value the interval is undefined and reported as NaN (``n/a`` in the tables): one
  seed says nothing about seed-to-seed variation.
- ``paired_difference(a, b)``: method A minus method B on the same prompts. ``a`` and ``b`` map each seed
  to that seed's per-prompt scores (same prompts in the same order, as the runs of one seed share their
  evaluation set). Two intervals are reported, because they answer different questions:

  * ``ci_prompts``: the paired t-interval over all (seed, prompt) differences pooled. It captures the
    sampling noise of the prompts given the trained models, not the variation between training seeds;
  * ``ci_seeds``: the t-interval over the per-seed mean differences (needs >= 2 seeds). It captures the
    training-seed variation and is the one to quote for "method A beats method B" claims; it is wider.

  ``p_prompts`` is the two-sided paired-t p-value of the pooled differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from alphapo.errors import UserError

__all__ = ["t_cdf", "t_quantile", "mean_ci", "paired_difference"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t_cdf: degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse CDF of Student's t (bisection on ``t_cdf``, accurate to ~1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)``: the Student-t interval over ``values`` (NaN bounds for one value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci: no values")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(a: Mapping[int, Sequence[float]], b: Mapping[int, Sequence[float]], *,
                      confidence: float = 0.95, what: str = "A - B") -> dict:
    """Paired per-prompt differences ``a - b`` (see the module docstring). ``what`` names the pair in errors."""
    if set(a) != set(b):
        raise UserError(f"{what}: the two sides have results for different seeds ({sorted(a)} vs {sorted(b)})")
    if not a:
        raise UserError(f"{what}: no seeds to compare")
    diffs: list[float] = []
    per_seed: list[float] = []
    for seed in sorted(a):
        xa, xb = list(a[seed]), list(b[seed])
        if len(xa) != len(xb) or not xa:
            raise UserError(f"{what}: seed {seed} has {len(xa)} per-prompt scores on one side and {len(xb)} on "
                            "the other; paired differences need the same prompts on both sides")
        d = [float(x) - float(y) for x, y in zip(xa, xb)]
        diffs += d
        per_seed.append(sum(d) / len(d))
    mean, lo, hi = mean_ci(diffs, confidence)
    n = len(diffs)
    p = math.nan
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1))
        if sd > 0:
            p = 2.0 * (1.0 - t_cdf(abs(mean) / (sd / math.sqrt(n)), n - 1))
        else:
            p = 1.0 if mean == 0 else 0.0
    _, slo, shi = mean_ci(per_seed, confidence)
    return {"mean_diff": mean, "ci_prompts": [lo, hi], "p_prompts": p, "n_pairs": n,
            "ci_seeds": [slo, shi], "n_seeds": len(per_seed), "per_seed_mean_diff": per_seed}
