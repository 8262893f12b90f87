"""Student-t quantiles, mean CIs and paired differences against closed forms and hand computations."""

from __future__ import annotations

import math
import statistics

import pytest

from alphapo.errors import UserError
from alphapo.experiments.stats import mean_ci, paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_closed_forms(p):
    # df = 1 is the Cauchy distribution: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p))
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(1 - p, 2) == pytest.approx(-t_quantile(p, 2), rel=1e-12)


def test_t_quantile_table_values_and_normal_limit():
    # the printed t-table (two-sided 95%): 2.776 (df 4), 2.262 (df 9), 2.042 (df 30); df -> inf: 1.95996
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=5e-4)
    assert t_quantile(0.975, 9) == pytest.approx(2.262, abs=5e-4)
    assert t_quantile(0.975, 30) == pytest.approx(2.042, abs=5e-4)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    # df = 2 CDF closed form: 1/2 + t / (2 sqrt(2 + t^2))
    assert t_cdf(1.3, 2) == pytest.approx(0.5 + 1.3 / (2 * math.sqrt(2 + 1.3 ** 2)), rel=1e-12)


def test_mean_ci_by_hand():
    # [1, 2, 3]: mean 2, sd 1, half width t_{.975,2} / sqrt(3) with t_{.975,2} = 0.95 / sqrt(2 * .975 * .025)
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert (lo, hi) == (pytest.approx(2 - t2 / math.sqrt(3)), pytest.approx(2 + t2 / math.sqrt(3)))
    # one seed: no interval
    mean, lo, hi = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    # identical values: a zero-width interval
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_paired_difference_by_hand():
    a = {0: [1.0, 2.0, 3.0], 1: [2.0, 2.0]}
    b = {0: [0.0, 2.0, 1.0], 1: [1.0, 3.0]}
    d = paired_difference(a, b)
    diffs = [1.0, 0.0, 2.0, 1.0, -1.0]  # seed 0 then seed 1, prompt by prompt
    half = t_quantile(0.975, 4) * statistics.stdev(diffs) / math.sqrt(5)
    assert d["mean_diff"] == pytest.approx(0.6)
    assert d["ci_prompts"] == [pytest.approx(0.6 - half), pytest.approx(0.6 + half)]
    assert d["n_pairs"] == 5 and d["n_seeds"] == 2
    # per-seed mean differences 1 and 0: t-interval with df 1 (tan(0.475 pi)), sd sqrt(1/2)
    assert d["per_seed_mean_diff"] == [pytest.approx(1.0), pytest.approx(0.0)]
    half_s = math.tan(0.475 * math.pi) * math.sqrt(0.5) / math.sqrt(2)
    assert d["ci_seeds"] == [pytest.approx(0.5 - half_s), pytest.approx(0.5 + half_s)]


def test_paired_t_p_value_by_hand():
    # differences [1, 2, 3]: t = 2 / (1 / sqrt 3); df 2: two-sided p = 1 - t / sqrt(2 + t^2)
    d = paired_difference({0: [1.0, 2.0, 3.0]}, {0: [0.0, 0.0, 0.0]})
    t = 2 * math.sqrt(3)
    assert d["p_prompts"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert math.isnan(d["ci_seeds"][0])  # one seed: no seed-level interval


def test_paired_difference_rejects_unpaired_inputs():
    with pytest.raises(UserError, match="seed 0 has 3 per-prompt scores on one side and 2"):
        paired_difference({0: [1, 2, 3]}, {0: [1, 2]})
    with pytest.raises(UserError, match="different seeds"):
        paired_difference({0: [1.0]}, {1: [1.0]})
