"""Property tests (hypothesis): finiteness everywhere, and agreement with a 50-digit mpmath reference.

Deterministic in CI: ``derandomize=True`` draws the same examples every run, ``deadline=None`` because
the machine is shared and timings vary. ``max_examples`` keeps the file within a few seconds.
"""

from __future__ import annotations

import os

import mpmath as mp
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphapo.losses import MAX_EXPONENT, compose, get_loss
from alphapo.losses.numerics import alpha_difference, phi

# ALPHAPO_HYPOTHESIS_EXAMPLES=5000 for a deeper (slower) local run; CI uses the default.
EXAMPLES = int(os.environ.get("ALPHAPO_HYPOTHESIS_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

alphas = st.floats(-20.0, 20.0, allow_nan=False)
avg_logps = st.floats(-50.0, 0.0, allow_nan=False)
betas = st.floats(0.0, 100.0, exclude_min=True, allow_nan=False)  # (0, 100], subnormals included
ref_betas = st.floats(1e-3, 100.0, allow_nan=False)  # mpmath agreement: no subnormal beta (it has < 53 bits)
gammas = st.floats(0.0, 10.0, allow_nan=False)
lengths = st.integers(1, 512)
dtypes = st.sampled_from([torch.float32, torch.bfloat16])
# links whose loss grows at most linearly in the reward gap (the squared links are discussed below)
bounded_links = st.sampled_from(["sigmoid", "smoothed_sigmoid", "robust", "hinge", "exo", "discopop",
                                 "rpo_bwd", "rpo_fwd"])


def _leaf(x: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float64).to(dtype).requires_grad_(True)


@PROPERTY
@given(alpha=alphas, s_w=avg_logps, s_l=avg_logps, beta=betas, gamma=gammas, len_w=lengths, len_l=lengths,
       dtype=dtypes)
def test_alphapo_loss_and_gradients_finite(alpha, s_w, s_l, beta, gamma, len_w, len_l, dtype):
    """alpha in [-20, 20], s in [-50, 0] (|alpha s| up to 1000, far past float32's e^88.7), beta in
    (0, 100], gamma in [0, 10], float32 and bfloat16 inputs: loss and both gradients are finite."""
    w, r = _leaf(s_w * len_w, dtype), _leaf(s_l * len_l, dtype)
    for name in ("alphapo", "alphapo_ref"):
        extra = {} if name == "alphapo" else {"ref_chosen_logps": torch.tensor([-3.0 * len_w], dtype=dtype),
                                              "ref_rejected_logps": torch.tensor([-40.0 * len_l], dtype=dtype)}
        out = get_loss(name)(chosen_logps=w, rejected_logps=r, chosen_lengths=torch.tensor([len_w]),
                             rejected_lengths=torch.tensor([len_l]), alpha=alpha, beta=beta, gamma=gamma, **extra)
        gw, gr = torch.autograd.grad(out.losses.sum(), (w, r))
        assert torch.isfinite(out.losses).all(), (name, out.losses)
        assert torch.isfinite(gw).all() and torch.isfinite(gr).all(), (name, gw, gr)
        assert torch.isfinite(out.chosen_rewards).all() and torch.isfinite(out.rejected_rewards).all()
        # the gradient never pushes the chosen likelihood down (the loss decreases in r(w), r' > 0)
        assert gw.item() <= 0.0 <= gr.item()


@PROPERTY
@given(alpha=alphas, s_w=avg_logps, s_l=avg_logps, beta=betas, gamma=gammas, link=bounded_links,
       normalize=st.sampled_from(["sum", "mean"]), dtype=dtypes, score_gap=st.floats(-10, 10))
def test_any_shape_with_any_bounded_link_is_finite(alpha, s_w, s_l, beta, gamma, link, normalize, dtype, score_gap):
    """The alpha shape composed with every link of at most linear growth, on summed or averaged
    log-probs (summed: |alpha u| up to 20 * 50 * 64): loss and gradients finite in float32/bfloat16.

    Not included: ``squared`` and ``rpo_sqr`` grow quadratically, so they overflow float32 once the reward
    gap passes ~1.8e19 (with beta = 100, alpha = 1: once the larger exponent passes ~40); see docs/papers.md."""
    loss = compose(shape="alpha", link=link, normalize=normalize, reference="none")
    w, r = _leaf(s_w * 64, dtype), _leaf(s_l * 64, dtype)
    kw = {}
    if "chosen_scores" in loss.__signature__.parameters:
        kw = {"chosen_scores": torch.tensor([score_gap]), "rejected_scores": torch.tensor([0.0])}
    out = loss(chosen_logps=w, rejected_logps=r, chosen_lengths=torch.tensor([64]),
               rejected_lengths=torch.tensor([64]), alpha=alpha, beta=beta, gamma=gamma, **kw)
    gw, gr = torch.autograd.grad(out.losses.sum(), (w, r))
    assert torch.isfinite(out.losses).all() and torch.isfinite(gw).all() and torch.isfinite(gr).all()


# --------------------------------------------------------------------------------------------------------
# Agreement with mpmath (50 digits) where |alpha * s| <= 50
# --------------------------------------------------------------------------------------------------------

mp.mp.dps = 50


def mp_alphapo(alpha, s_w, s_l, beta, gamma):
    """Reference loss and d loss / d s_w, d loss / d s_l, straight from AlphaPO eq. (4), 50 digits."""
    a, sw, sl, b, g = (mp.mpf(x) for x in (alpha, s_w, s_l, beta, gamma))

    def r(s):
        return b * s if a == 0 else -(b / a) * mp.expm1(-a * s)  # expm1: exact for tiny alpha too

    def dr(s):
        return b * mp.exp(-a * s)

    z = r(sw) - r(sl) - g
    loss = mp.log1p(mp.exp(-z))
    sig = 1 / (1 + mp.exp(z))  # sigma(-z)
    return loss, -sig * dr(sw), sig * dr(sl)


def _close(got: float, ref, rel: float = 1e-6) -> bool:
    ref = float(ref)
    return abs(got - ref) <= rel * abs(ref) + 1e-300


@st.composite
def regime_50(draw):
    """alpha in [-20, 20] and average log-probs in [-50, 0] restricted to |alpha * s| <= 50."""
    alpha = draw(st.one_of(st.just(0.0), alphas, st.floats(-1e-6, 1e-6)))
    bound = 50.0 if abs(alpha) <= 1.0 else 50.0 / abs(alpha)
    s = st.floats(-bound, 0.0, allow_nan=False)
    return alpha, draw(s), draw(s), draw(ref_betas), draw(gammas)


@PROPERTY
@given(case=regime_50())
def test_alphapo_matches_mpmath_reference(case):
    """Float64 loss and gradients agree with the 50-digit reference to 1e-6 relative (|alpha s| <= 50)."""
    alpha, s_w, s_l, beta, gamma = case
    w = torch.tensor([s_w], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([s_l], dtype=torch.float64, requires_grad=True)
    one = torch.tensor([1])
    out = get_loss("alphapo")(chosen_logps=w, rejected_logps=r, chosen_lengths=one, rejected_lengths=one,
                              alpha=alpha, beta=beta, gamma=gamma)
    gw, gr = torch.autograd.grad(out.losses.sum(), (w, r))
    loss, dw, dl = mp_alphapo(alpha, s_w, s_l, beta, gamma)
    assert _close(out.losses.item(), loss), (out.losses.item(), loss)
    assert _close(gw.item(), dw) and _close(gr.item(), dl), (gw.item(), dw, gr.item(), dl)


@PROPERTY
@given(case=regime_50(), close=st.floats(1e-9, 1e-3))
def test_alpha_reward_gap_has_no_cancellation(case, close):
    """Nearly equal log-probs (s_l = s_w - close): the gap (beta/alpha)(e^{a_l} - e^{a_w}) keeps 1e-6
    relative accuracy, where subtracting the two rewards would lose up to log10(e^50 / close) digits."""
    alpha, s_w, _, beta, _ = case
    s_l = s_w - close
    got = alpha_difference(torch.tensor(s_w, dtype=torch.float64), torch.tensor(s_l, dtype=torch.float64),
                           beta=beta, alpha=alpha).item()
    a, sw, sl, b = mp.mpf(alpha), mp.mpf(s_w), mp.mpf(s_l), mp.mpf(beta)
    ref = b * (sw - sl) if a == 0 else (b / a) * (mp.expm1(-a * sl) - mp.expm1(-a * sw))
    assert _close(got, ref), (got, ref)


def test_phi_is_exactly_one_at_zero_with_finite_gradient():
    """phi(0) = 1 exactly (so alpha = 0 is SimPO bit for bit) and its gradient at 0 is finite (no 0/0 NaN
    leaking through torch.where); phi(1e-30) = 1 and phi(-1) = 1 - 1/e = 0.6321206."""
    z = torch.tensor([0.0, -0.0, 1e-30, -1.0], dtype=torch.float64, requires_grad=True)
    out = phi(z)
    assert out[0].item() == 1.0 and out[1].item() == 1.0 and out[2].item() == 1.0
    assert out[3].item() == pytest.approx(0.6321205588285577, rel=1e-15)
    (g,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(g).all()


def test_exponent_cap_is_continuous_and_stated():
    """Above MAX_EXPONENT = 60 the exponential continues linearly: value and slope match at the cap."""
    from alphapo.losses.numerics import exp_capped

    assert MAX_EXPONENT == 60.0
    z = torch.tensor([MAX_EXPONENT - 1e-9, MAX_EXPONENT, MAX_EXPONENT + 1e-9, 1e6], dtype=torch.float64,
                     requires_grad=True)
    v = exp_capped(z)
    (g,) = torch.autograd.grad(v.sum(), z)
    e60 = torch.exp(torch.tensor(60.0, dtype=torch.float64))
    torch.testing.assert_close(v[:3], torch.full((3,), e60.item(), dtype=torch.float64), rtol=1e-8, atol=0)
    torch.testing.assert_close(g[:3], torch.full((3,), e60.item(), dtype=torch.float64), rtol=1e-8, atol=0)
    assert v[3].item() == pytest.approx(e60.item() * (1 + 1e6 - 60), rel=1e-12)


def test_closed_form_gradients_match_finite_differences():
    """The custom backward of the alpha reward and reward gap equals the numerical derivative of the
    forward (torch.autograd.gradcheck, float64), including second derivatives (gradgradcheck)."""
    from alphapo.losses.numerics import alpha_reward

    # moderate exponents: finite differences of a value ~e^a lose ~e^a * 1e-16 / 1e-6 to rounding
    u_w = torch.tensor([-0.3, -2.0, -1.2, -0.01], dtype=torch.float64, requires_grad=True)
    u_l = torch.tensor([-0.35, -0.5, -2.5, -0.01 - 1e-7], dtype=torch.float64, requires_grad=True)
    for alpha in (-3.0, -0.5, 0.0, 1e-9, 0.25, 3.0):
        assert torch.autograd.gradcheck(lambda a, b: alpha_difference(a, b, beta=2.0, alpha=alpha), (u_w, u_l))
        assert torch.autograd.gradgradcheck(lambda a, b: alpha_difference(a, b, beta=2.0, alpha=alpha), (u_w, u_l))
        assert torch.autograd.gradcheck(lambda a: alpha_reward(a, beta=2.0, alpha=alpha), (u_w,))


def test_learnable_alpha_and_beta_fall_back_to_autograd():
    """Tensor hyper-parameters that require grad get gradients (plain autograd path)."""
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    gap = alpha_difference(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64),
                           beta=beta, alpha=alpha)
    ga, gb = torch.autograd.grad(gap.sum(), (alpha, beta))
    # gap = (beta/alpha)(e^{2 alpha} - e^{alpha}); d/d beta = gap / beta
    assert gb.item() == pytest.approx(gap.item() / 2.0, rel=1e-12) and torch.isfinite(ga)
