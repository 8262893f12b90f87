"""Win rate (ties half) and its intervals on hand-made cases; the length-controlled win rate on synthetic
cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from alphapo.errors import UserError
from alphapo.evaluation.metrics import (
    fit_logistic,
    length_controlled_win_rate,
    paired_difference,
    preferences_from_scores,
    wilson_interval,
    win_rate,
)


def test_preferences_from_scores_ties_half():
    prefs = preferences_from_scores([3, 2, 5, 1.05], [1, 2, 6, 1.0], tie_tol=0.1)
    assert prefs.tolist() == [1.0, 0.5, 0.0, 0.5]
    with pytest.raises(UserError):
        preferences_from_scores([1, 2], [1])


def test_preferences_from_scores_rejects_non_finite_scores():
    """NaN - x compares False both ways, so a NaN judge score used to become a silent loss (0.0)."""
    with pytest.raises(UserError, match="non-finite model judge score.*prompt 1"):
        preferences_from_scores([3, float("nan")], [1, 2])
    with pytest.raises(UserError, match="non-finite reference"):
        preferences_from_scores([3, 2], [float("inf"), 2])


def test_win_rate_counts_ties_as_half():
    """2 wins, 1 tie, 1 loss: (2 + 0.5) / 4 = 0.625."""
    wr = win_rate([1, 1, 0.5, 0])
    assert wr.win_rate == 0.625 and (wr.n_wins, wr.n_ties, wr.n_losses, wr.n) == (2, 1, 1, 4)


def test_wilson_interval_hand_values():
    """8 of 10, z = 1.959964, z^2 = 3.841459:
    denom = 1 + 0.3841459 = 1.3841459; center = (0.8 + 0.1920729) / denom = 0.716740
    half = z * sqrt(0.016 + 0.0096036) / denom = 1.959964 * 0.1600114 / 1.3841459 = 0.226578
    -> (0.490162, 0.943318). 10 of 10: lower = 1 / denom' with denom' = 1 + z^2 / 10 = 1 / 1.3841459 = 0.722467, upper 1.
    """
    assert win_rate([1] * 8 + [0] * 2).ci == pytest.approx((0.490162, 0.943318), abs=2e-6)
    assert wilson_interval(1.0, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)


def test_normal_interval_hand_values():
    """12 wins, 4 ties, 4 losses: mean 0.7; SS = 12 * 0.09 + 4 * 0.04 + 4 * 0.49 = 3.2;
    sd = sqrt(3.2 / 19) = 0.410391; se = sd / sqrt(20) = 0.091766; half = 1.959964 * se = 0.179858."""
    wr = win_rate([1] * 12 + [0.5] * 4 + [0] * 4, method="normal")
    assert wr.win_rate == pytest.approx(0.7)
    assert wr.ci == pytest.approx((0.520142, 0.879858), abs=1e-6)


def test_bootstrap_interval_is_seeded_and_close_to_normal():
    rng = np.random.default_rng(0)
    prefs = rng.choice([0.0, 0.5, 1.0], size=400, p=[0.3, 0.2, 0.5])
    a = win_rate(prefs, method="bootstrap", seed=1)
    assert a == win_rate(prefs, method="bootstrap", seed=1)
    n = win_rate(prefs, method="normal")
    assert a.ci_low < a.win_rate < a.ci_high
    assert a.ci == pytest.approx(n.ci, abs=0.01)


def test_win_rate_rejects_bad_input():
    with pytest.raises(UserError, match="at least one"):
        win_rate([])
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        win_rate([1.5])
    with pytest.raises(UserError, match="CI method"):
        win_rate([1], method="exact")


def test_fit_logistic_intercept_only_is_the_logit_of_the_mean():
    """Without penalty, intercept-only soft-label logistic regression gives theta = logit(mean y)."""
    y = np.array([1.0, 1.0, 0.5, 0.0, 1.0])  # mean 0.7
    beta = fit_logistic(np.ones((5, 1)), y, l2=0.0)
    assert beta[0] == pytest.approx(np.log(0.7 / 0.3), abs=1e-8)


def test_lc_equals_win_rate_without_length_differences():
    """All length differences equal -> no length term; LC = sigmoid(logit(0.75)) = 0.75 (l2 = 0)."""
    lc = length_controlled_win_rate([1, 1, 1, 0], [10, 20, 30, 40], [5, 15, 25, 35], l2=0.0, n_boot=0)
    assert lc.lc_win_rate == pytest.approx(0.75, abs=1e-9) and lc.coefficients["length"] == 0.0


def _synthetic(seed, n=400):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(50, 300, n)
    model = ref + rng.normal(60, 60, n)  # the model is usually longer
    return rng, model, ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_length_only_advantage_gives_lc_near_half(seed):
    """A judge that only likes length (P(win) = sigmoid(d / 30)) and a model that is only longer: the raw
    win rate is ~0.75 but the LC win rate is ~0.5 (no quality difference at equal length)."""
    rng, model, ref = _synthetic(seed)
    prefs = (rng.uniform(size=model.size) < 1 / (1 + np.exp(-(model - ref) / 30))).astype(float)
    lc = length_controlled_win_rate(prefs, model, ref, n_boot=0)
    assert lc.win_rate > 0.7
    assert abs(lc.lc_win_rate - 0.5) < 0.08
    assert lc.coefficients["length"] > 2  # the GLM attributes the wins to length


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quality_advantage_survives_length_control(seed):
    """Wins with probability 0.8 whatever the lengths: LC stays ~0.8 even though the model is longer."""
    rng, model, ref = _synthetic(seed)
    prefs = (rng.uniform(size=model.size) < 0.8).astype(float)
    lc = length_controlled_win_rate(prefs, model, ref, n_boot=50, seed=seed)
    assert lc.lc_win_rate > 0.72 and abs(lc.lc_win_rate - lc.win_rate) < 0.05
    assert lc.ci_low < lc.lc_win_rate < lc.ci_high


def test_lc_is_antisymmetric_in_model_and_reference():
    """Swapping the two sides (y -> 1 - y, d -> -d) flips every coefficient: LC' = 1 - LC exactly."""
    rng, model, ref = _synthetic(5, n=200)
    prefs = rng.choice([0.0, 0.5, 1.0], size=200)
    a = length_controlled_win_rate(prefs, model, ref, n_boot=0).lc_win_rate
    b = length_controlled_win_rate(1 - prefs, ref, model, n_boot=0).lc_win_rate
    assert a + b == pytest.approx(1.0, abs=1e-9)


def test_lc_recovers_glm_coefficients():
    """Data drawn from the model itself, logit = 0.5 + 2 tanh(d / sd): the fit recovers (0.5, 2)."""
    rng = np.random.default_rng(0)
    d = rng.normal(0, 50, 20000)
    feat = np.tanh(d / d.std(ddof=1))
    prefs = (rng.uniform(size=d.size) < 1 / (1 + np.exp(-(0.5 + 2 * feat)))).astype(float)
    lc = length_controlled_win_rate(prefs, d, np.zeros_like(d), n_boot=0)
    assert lc.coefficients["intercept"] == pytest.approx(0.5, abs=0.06)
    assert lc.coefficients["length"] == pytest.approx(2.0, abs=0.1)
    assert lc.lc_win_rate == pytest.approx(1 / (1 + np.exp(-lc.coefficients["intercept"])))


def test_lc_difficulty_covariate():
    """The LC prediction keeps the difficulty term: LC = mean_i sigmoid(theta + psi * difficulty_i)."""
    rng = np.random.default_rng(1)
    diff = rng.normal(size=3000)
    d = rng.normal(0, 30, 3000)
    prefs = (rng.uniform(size=3000) < 1 / (1 + np.exp(-(0.3 + 1.5 * diff)))).astype(float)
    lc = length_controlled_win_rate(prefs, d, np.zeros_like(d), difficulty=diff, n_boot=0)
    c = lc.coefficients
    assert c["difficulty"] == pytest.approx(1.5, abs=0.15) and abs(c["length"]) < 0.2
    want = np.mean(1 / (1 + np.exp(-(c["intercept"] + c["difficulty"] * diff))))
    assert lc.lc_win_rate == pytest.approx(want)
    with pytest.raises(UserError, match="difficulty"):
        length_controlled_win_rate([1, 0], [1, 2], [2, 1], difficulty=[1.0])


def test_paired_normal_interval_hand_values():
    """a - b = d = [1, -0.25, 1, 0, 0.25]: mean 0.4; squared deviations 0.36 + 0.4225 + 0.36 + 0.16 + 0.0225
    = 1.325, sample variance 1.325 / 4 = 0.33125, sd 0.5755432, standard error sd / sqrt(5) = 0.2573903;
    half width 1.959964 * 0.2573903 = 0.5044757, so the 95% interval is [-0.1044757, 0.9044757]."""
    d = paired_difference([1, 0.5, 1, 0, 1], [0, 0.75, 0, 0, 0.75], method="normal")
    assert d.diff == pytest.approx(0.4)
    assert d.ci == pytest.approx((-0.1044757, 0.9044757), abs=1e-6)
    assert not d.excludes_zero and d.n == 5
    assert d.to_dict()["ci"] == list(d.ci)


def test_paired_bootstrap_interval_hand_values():
    """d = [0, 0, 3]: a resample of 3 prompts holds k copies of the 3 with k ~ Binomial(3, 1/3), so its mean is
    k in {0, 1, 2, 3} with probabilities 8/27, 12/27, 6/27, 1/27. P(mean = 0) = 0.30 > 0.025 puts the 2.5%
    quantile at 0; P(mean <= 2) = 26/27 = 0.963 < 0.975 puts the 97.5% quantile at 3 (about 74 of the 2,000
    resamples are all 3s, more than the 50 that the top 2.5% holds). So the interval is [0, 3]."""
    d = paired_difference([0, 1, 5], [0, 1, 2], n_boot=2000, seed=0)
    assert d.diff == pytest.approx(1.0)
    assert d.ci == (0.0, 3.0)
    # a constant difference has a zero-width interval that excludes 0
    c = paired_difference([1, 1, 1, 1], [0.75, 0.75, 0.75, 0.75])
    assert c.ci == pytest.approx((0.25, 0.25)) and c.excludes_zero


def test_paired_bootstrap_is_seeded_and_agrees_with_normal_for_large_n():
    rng = np.random.default_rng(0)
    base = rng.random(1000)
    a = base + (rng.random(1000) < 0.3) * 0.5  # a shared per-prompt level plus a real gain
    b = base
    boot = paired_difference(a, b, seed=7)
    assert paired_difference(a, b, seed=7) == boot
    normal = paired_difference(a, b, method="normal")
    assert boot.diff == normal.diff
    assert boot.ci == pytest.approx(normal.ci, abs=0.005)
    assert boot.excludes_zero
    # pairing removes the shared level: the unpaired standard error would be about 2x larger here
    unpaired_se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert (normal.ci_high - normal.ci_low) / 2 < 0.6 * 1.96 * unpaired_se


def test_paired_difference_rejects_bad_input():
    with pytest.raises(UserError, match="one value per prompt on both sides: got 2 and 1"):
        paired_difference([1, 2], [1])
    with pytest.raises(UserError, match="non-finite value in the second system at prompt 1"):
        paired_difference([1, 2], [1, float("nan")])
    with pytest.raises(UserError, match="unknown paired CI method"):
        paired_difference([1], [1], method="t")
