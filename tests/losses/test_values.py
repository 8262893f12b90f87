"""Hand-derived values: the arithmetic is in each test's docstring."""

from __future__ import annotations

import math

import pytest
import torch

from alphapo.losses import compose, get_loss


def T(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def softplus(x):
    return math.log1p(math.exp(x))


# logp_w = -10, logp_l = -12, ref_w = -11, ref_l = -11, |w| = 5, |l| = 4
#   => h_w = 1, h_l = -1, h = 2; s_w = -2, s_l = -3; per-token log-ratios h_w/|w| = 0.2, h_l/|l| = -0.25
BASE = dict(chosen_logps=T(-10.0), rejected_logps=T(-12.0), ref_chosen_logps=T(-11.0),
            ref_rejected_logps=T(-11.0), chosen_lengths=T(5), rejected_lengths=T(4))
NOREF = {k: v for k, v in BASE.items() if not k.startswith("ref")}


def value(name, inputs=BASE, **hp):
    return get_loss(name)(**inputs, **hp).losses.item()


def test_dpo():
    """beta = 0.5, h = 2 -> z = 1; loss = -logsig(1) = log(1 + e^-1) = 0.31326168751822286."""
    assert value("dpo", beta=0.5) == pytest.approx(0.31326168751822286, rel=1e-12)
    out = get_loss("dpo")(**BASE, beta=0.5)
    assert out.chosen_rewards.item() == 0.5 and out.rejected_rewards.item() == -0.5  # beta*h_w, beta*h_l


def test_dpo_margin_gamma():
    """beta = 0.5, gamma = 1: z = 1 - 1 = 0; loss = log 2."""
    assert value("dpo", beta=0.5, gamma=1.0) == pytest.approx(math.log(2), rel=1e-12)


def test_cdpo():
    """beta = 0.5, eps = 0.2, z = 1: 0.8*log(1+e^-1) + 0.2*log(1+e^1) = 0.8*0.3132617 + 0.2*1.3132617 = 0.5132617."""
    assert value("cdpo", beta=0.5, eps=0.2) == pytest.approx(0.8 * softplus(-1) + 0.2 * softplus(1), rel=1e-12)
    assert value("cdpo", beta=0.5, eps=0.2) == pytest.approx(0.5132616875182229, rel=1e-12)


def test_robust():
    """beta = 0.5, eps = 0.2, z = 1: (0.8*softplus(-1) - 0.2*softplus(1)) / 0.6
    = (0.25060935 - 0.26265234) / 0.6 = -0.0200716458."""
    assert value("robust", beta=0.5, eps=0.2) == pytest.approx(-0.0200716458, rel=1e-9)


def test_hinge():
    """beta = 0.25, h = 2: max(0, 1 - 0.5) = 0.5; beta = 1: max(0, 1 - 2) = 0."""
    assert value("hinge", beta=0.25) == pytest.approx(0.5, rel=1e-12)
    assert value("hinge", beta=1.0) == 0.0


def test_ipo():
    """h' = 0.2 - (-0.25) = 0.45; beta = 0.5 -> 1/(2 beta) = 1; (0.45 - 1)^2 = 0.3025."""
    assert value("ipo", beta=0.5) == pytest.approx(0.3025, rel=1e-12)


def test_sppo_hard():
    """h_w = 1, h_l = -1. beta = 0.5 -> 1/(2 beta) = 1: (1 - 1)^2 + (-1 + 1)^2 = 0.
    beta = 1 -> 0.5: (1 - 0.5)^2 + (-1 + 0.5)^2 = 0.25 + 0.25 = 0.5."""
    assert value("sppo_hard", beta=0.5) == 0.0
    assert value("sppo_hard", beta=1.0) == pytest.approx(0.5, rel=1e-12)


def test_simpo():
    """beta = 2.5, gamma = 0.25, s_w = -2, s_l = -3: z = 2.5*1 - 0.25 = 2.25; loss = log(1 + e^-2.25) = log(1.1053992) = 0.1002066."""
    assert value("simpo", NOREF, beta=2.5, gamma=0.25) == pytest.approx(softplus(-2.25), rel=1e-12)
    assert value("simpo", NOREF, beta=2.5, gamma=0.25) == pytest.approx(0.10020656, rel=1e-7)


def test_alphapo():
    """alpha = 0.25, beta = 2.5, gamma = 0.25, s_w = -2, s_l = -3:
    r_w = (2.5/0.25)(1 - e^{0.5}) = 10(1 - 1.6487213) = -6.487213;
    r_l = 10(1 - e^{0.75}) = 10(1 - 2.1170000) = -11.170000;
    z = 4.682787 - 0.25 = 4.432787; loss = log(1 + e^-4.432787) = log(1.0118813) = 0.0118113."""
    r_w, r_l = 10 * (1 - math.exp(0.5)), 10 * (1 - math.exp(0.75))
    expected = softplus(-(r_w - r_l - 0.25))
    out = get_loss("alphapo")(**NOREF, alpha=0.25, beta=2.5, gamma=0.25)
    assert out.losses.item() == pytest.approx(expected, rel=1e-12)
    assert out.losses.item() == pytest.approx(0.0118113, rel=1e-5)
    assert out.chosen_rewards.item() == pytest.approx(r_w, rel=1e-12)
    assert out.rejected_rewards.item() == pytest.approx(r_l, rel=1e-12)


def test_alphapo_ref():
    """Per-token log-ratios u_w = 0.2, u_l = -0.25; alpha = 1, beta = 1, gamma = 0:
    r = 1 - e^{-u}: r_w = 1 - e^{-0.2} = 0.18126925, r_l = 1 - e^{0.25} = -0.28402542;
    z = 0.46529467; loss = log(1 + e^-0.46529467) = log(1.6279597) = 0.4873216."""
    expected = softplus(-((1 - math.exp(-0.2)) - (1 - math.exp(0.25))))
    assert value("alphapo_ref", alpha=1.0, beta=1.0, gamma=0.0) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.4873216, rel=1e-6)


def test_simpo_ref_and_sigmoid_norm():
    """u_w = 0.2, u_l = -0.25, beta = 2: z = 2*0.45 - gamma. gamma = 0.4: z = 0.5, loss = log(1+e^-0.5) = 0.4740770;
    sigmoid_norm (gamma = 0): z = 0.9."""
    assert value("simpo_ref", beta=2.0, gamma=0.4) == pytest.approx(softplus(-0.5), rel=1e-12)
    assert value("simpo_ref", beta=2.0, gamma=0.4) == pytest.approx(0.4740770, rel=1e-6)
    assert value("sigmoid_norm", beta=2.0) == pytest.approx(softplus(-0.9), rel=1e-12)


def test_fdpo_alpha():
    """u = pi/pi_ref: log u_w = h_w = 1, log u_l = -1; alpha = 0.5, beta = 1:
    f'(u) = (1 - u^-0.5)/0.5: f'(u_w) = 2(1 - e^-0.5) = 0.78693868, f'(u_l) = 2(1 - e^0.5) = -1.29744254;
    z = 2.08438122; loss = log(1 + e^-2.08438122) = log(1.1244068) = 0.1172354."""
    fw, fl = 2 * (1 - math.exp(-0.5)), 2 * (1 - math.exp(0.5))
    assert value("fdpo_alpha", alpha=0.5, beta=1.0) == pytest.approx(softplus(-(fw - fl)), rel=1e-12)
    assert value("fdpo_alpha", alpha=0.5, beta=1.0) == pytest.approx(0.1172354, rel=1e-6)


def test_cpo():
    """beta = 0.5, logp_w - logp_l = 2 -> z = 1: -logsig(1) = 0.3132617; NLL(w) = 10/5 = 2;
    nll_weight = 1: 2.3132617; nll_weight = 0.5: 1.3132617. An explicit chosen_nll replaces 10/5."""
    assert value("cpo", NOREF, beta=0.5) == pytest.approx(softplus(-1) + 2.0, rel=1e-12)
    assert value("cpo", NOREF, beta=0.5, nll_weight=0.5) == pytest.approx(softplus(-1) + 1.0, rel=1e-12)
    assert value("cpo", {**NOREF, "chosen_nll": T(3.0)}, beta=0.5, nll_weight=1.0) == pytest.approx(
        softplus(-1) + 3.0, rel=1e-12)


def test_cpo_variants():
    """cpo_hinge, beta = 0.25: max(0, 1 - 0.5) + 2 = 2.5. cpo_ipo, beta = 0.5: (s_w - s_l - 1)^2 + 2 = 0 + 2.
    cpo_simpo, beta = 2.5, gamma = 0.25: softplus(-2.25) + 2."""
    assert value("cpo_hinge", NOREF, beta=0.25) == pytest.approx(2.5, rel=1e-12)
    assert value("cpo_ipo", NOREF, beta=0.5) == pytest.approx(2.0, rel=1e-12)
    assert value("cpo_simpo", NOREF, beta=2.5, gamma=0.25) == pytest.approx(softplus(-2.25) + 2.0, rel=1e-12)


def test_shapes_linear_and_inverse_linear():
    """u = -1, beta = 2: linear = 2(e^-1 - 1) = -1.2642411; inverse_linear = 2(1 - e^1) = -3.4365637.
    They equal the alpha shape at alpha = -1 and +1."""
    from alphapo.losses.shapes import ALPHA, INVERSE_LINEAR, LINEAR

    u = T(-1.0, -0.3, -7.5)
    assert LINEAR.reward(u, beta=2.0)[0].item() == pytest.approx(2 * (math.exp(-1) - 1), rel=1e-14)
    assert INVERSE_LINEAR.reward(u, beta=2.0)[0].item() == pytest.approx(2 * (1 - math.e), rel=1e-14)
    torch.testing.assert_close(LINEAR.reward(u, beta=2.0), 2 * (torch.exp(u) - 1), rtol=1e-14, atol=0)
    torch.testing.assert_close(INVERSE_LINEAR.reward(u, beta=2.0), 2 * (1 - torch.exp(-u)), rtol=1e-14, atol=0)
    assert torch.equal(LINEAR.reward(u, beta=2.0), ALPHA.reward(u, beta=2.0, alpha=-1.0))
    assert torch.equal(INVERSE_LINEAR.reward(u, beta=2.0), ALPHA.reward(u, beta=2.0, alpha=1.0))
    uw, ul = T(-0.5, -2.0), T(-1.5, -0.1)
    torch.testing.assert_close(LINEAR.difference(uw, ul, beta=2.0),
                               LINEAR.reward(uw, beta=2.0) - LINEAR.reward(ul, beta=2.0), rtol=1e-13, atol=0)


def test_alphapo_at_zero_is_simpo_exactly_and_continuous():
    """phi(0) = 1 exactly, so alpha = 0 reproduces SimPO bit for bit (float32 and float64), and
    |alpha| = 1e-6 moves the loss by O(alpha) only (no 1/alpha blow-up)."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        lens_w, lens_l = torch.randint(1, 50, (64,), generator=g), torch.randint(1, 50, (64,), generator=g)
        inp = dict(chosen_logps=(-torch.rand(64, generator=g) * 100).to(dtype),
                   rejected_logps=(-torch.rand(64, generator=g) * 100).to(dtype),
                   chosen_lengths=lens_w, rejected_lengths=lens_l)
        a = get_loss("alphapo")(**inp, alpha=0.0, beta=2.5, gamma=0.5)
        s = get_loss("simpo")(**inp, beta=2.5, gamma=0.5)
        assert torch.equal(a.losses, s.losses) and torch.equal(a.chosen_rewards, s.chosen_rewards)
        if dtype == torch.float64:
            for eps in (1e-6, -1e-6):
                near = get_loss("alphapo")(**inp, alpha=eps, beta=2.5, gamma=0.5).losses
                torch.testing.assert_close(near, s.losses, rtol=1e-4, atol=1e-8)
    # the same for the reference form and for any link composed with the alpha shape
    inp = dict(BASE)
    assert torch.equal(value_t("alphapo_ref", inp, alpha=0.0), value_t("simpo_ref", inp))
    for link in ("hinge", "squared", "robust"):
        a = compose(shape="alpha", link=link, normalize="mean", reference="ratio")(**inp, alpha=0.0)
        b = compose(shape="log", link=link, normalize="mean", reference="ratio")(**inp)
        assert torch.equal(a.losses, b.losses)


def value_t(name, inputs, **hp):
    return get_loss(name)(**inputs, **hp).losses


@pytest.mark.parametrize("logp_w,logp_l,paper", [
    (-1.0, -2.0, [0.11, 1.26, 1.63, 0.44, 2.15e-8]),  # AlphaPO section 3.3, Illustration 1
    (-2.0, -1.0, [0.12, 3.41, 7.05, 46.77, 383.34]),  # Illustration 2
])
def test_alphapo_gradient_reproduces_the_papers_illustrations(logp_w, logp_l, paper):
    """AlphaPO section 3.3: beta = 1, gamma = 0, |y| = 1, d pi / d v = 1. Autograd through our loss
    (pi_w = e^{logp_w} + v, pi_l = e^{logp_l} + v at v = 0) gives |dl/dv| at alpha = -2, 0, 0.25, 1, 2;
    the paper prints them rounded to 2 decimals (or 3 significant digits)."""
    for alpha, expected in zip([-2.0, 0.0, 0.25, 1.0, 2.0], paper):
        v = torch.zeros((), dtype=torch.float64, requires_grad=True)
        logps = [torch.log(math.exp(lp) + v).reshape(1) for lp in (logp_w, logp_l)]
        one = torch.tensor([1])
        out = get_loss("alphapo")(chosen_logps=logps[0], rejected_logps=logps[1], chosen_lengths=one,
                                  rejected_lengths=one, alpha=alpha, beta=1.0, gamma=0.0)
        (g,) = torch.autograd.grad(out.losses.sum(), v)
        tol = 0.01 * expected if expected < 0.01 else max(0.01 * expected, 0.005)  # rounding of the print
        assert abs(abs(g.item()) - expected) <= tol, (alpha, g.item(), expected)


def test_bco_pair_reward_shift_and_running_mean():
    """beta = 0.5, h_w = 1, h_l = -1 -> r_w = 0.5, r_l = -0.5. delta = 0.25:
    -logsig(0.5 - 0.25) - logsig(-(-0.5 - 0.25)) = softplus(-0.25) + softplus(-0.75) = 0.5759394 + 0.3868710
    = 0.9628104. RunningMean: [1, 2, 3] -> 2; then [5] -> (3*2 + 5)/4 = 2.75."""
    from alphapo.losses import RunningMean

    got = value("bco_pair", beta=0.5, delta=0.25)
    assert got == pytest.approx(softplus(-0.25) + softplus(-0.75), rel=1e-12)
    assert got == pytest.approx(0.9628104, rel=1e-6)
    running = RunningMean().update(torch.tensor([1.0, 2.0, 3.0]))
    assert running.mean == 2.0 and running.count == 3
    running = running.update(torch.tensor([5.0]))
    assert running.mean == pytest.approx(2.75, rel=1e-15) and running.count == 4
    assert running.update(torch.tensor([])) is running
