"""Limits and reductions named in docs/papers.md, plus hand-derived values of the RPO family."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from alphapo.errors import UserError
from alphapo.losses import LOSSES, LossOutput, MissingInputError, get_loss


def rand(shape, seed, scale=10.0):
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(shape, generator=g, dtype=torch.float64) * scale


def pair(seed=0, b=16):
    return dict(chosen_logps=rand(b, seed), rejected_logps=rand(b, seed + 1), ref_chosen_logps=rand(b, seed + 2),
                ref_rejected_logps=rand(b, seed + 3), chosen_lengths=torch.randint(1, 9, (b,)),
                rejected_lengths=torch.randint(1, 9, (b,)))


def test_rpo_bwd_tends_to_dpo_as_target_probability_tends_to_one():
    """sigma(d_r) -> 1: KL(Bern(1) || Bern(sigma(z))) = -logsig(z), the DPO loss. The gap shrinks like
    sigma(-d_r) * |d_r| (e^-10 * 10 = 4.5e-4, e^-40 * 40 = 1.7e-16)."""
    inp = pair()
    dpo = get_loss("dpo")(**inp, beta=0.5).losses
    b = dpo.shape[0]
    gaps = []
    for d_r in (10.0, 20.0, 40.0):
        rpo = get_loss("rpo_bwd")(**inp, chosen_scores=torch.full((b,), d_r, dtype=torch.float64),
                                  rejected_scores=torch.zeros(b, dtype=torch.float64), beta=0.5, eta=1.0).losses
        gaps.append((rpo - dpo).abs().max().item())
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[0] < 1e-3 and gaps[2] < 1e-12


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_rpo_bwd_with_target_one_minus_eps_is_cdpo_minus_binary_entropy(eps):
    """sigma(d_r) = 1 - eps (d_r = log((1-eps)/eps)): rpo_bwd = (1-eps)(log(1-eps) - logsig z)
    + eps(log eps - logsig(-z)) = cdpo(eps) - H(eps), H(eps) = -(1-eps)log(1-eps) - eps log eps
    (H(0.3) = 0.6108643)."""
    inp = pair(seed=4)
    b = inp["chosen_logps"].shape[0]
    d_r = math.log((1 - eps) / eps)
    rpo = get_loss("rpo_bwd")(**inp, chosen_scores=torch.full((b,), d_r, dtype=torch.float64),
                              rejected_scores=torch.zeros(b, dtype=torch.float64), beta=0.5).losses
    cdpo = get_loss("cdpo")(**inp, beta=0.5, eps=eps).losses
    entropy = -(1 - eps) * math.log(1 - eps) - eps * math.log(eps)
    torch.testing.assert_close(rpo, cdpo - entropy, rtol=1e-12, atol=1e-13)
    if eps == 0.3:
        assert entropy == pytest.approx(0.6108643, rel=1e-6)


def test_rpo_pairwise_hand_values():
    """logp_w = -10, logp_l = -12, refs -11: h = 2; beta = 0.5 -> d_pi = 1. R_w = 3, R_l = 1, eta = 1 -> d_r = 2.
    rpo_sqr = (1 - 2)^2 = 1.
    rpo_bwd = s(2)(ls(2) - ls(1)) + s(-2)(ls(-2) - ls(-1)) with s = sigma, ls = logsig:
            = 0.8807971*(-0.1269280 + 0.3132617) + 0.1192029*(-2.1269280 + 1.3132617) = 0.0671308.
    rpo_fwd = s(1)(ls(1) - ls(2)) + s(-1)(ls(-1) - ls(-2)) = 0.7310586*(-0.1863337) + 0.2689414*0.8136663
            = 0.0826077."""
    T = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    inp = dict(chosen_logps=T(-10.0), rejected_logps=T(-12.0), ref_chosen_logps=T(-11.0),
               ref_rejected_logps=T(-11.0), chosen_scores=T(3.0), rejected_scores=T(1.0))
    s, ls = (lambda x: 1 / (1 + math.exp(-x))), (lambda x: -math.log1p(math.exp(-x)))
    bwd = s(2) * (ls(2) - ls(1)) + s(-2) * (ls(-2) - ls(-1))
    fwd = s(1) * (ls(1) - ls(2)) + s(-1) * (ls(-1) - ls(-2))
    assert get_loss("rpo_sqr")(**inp, beta=0.5).losses.item() == pytest.approx(1.0, rel=1e-12)
    assert get_loss("rpo_bwd")(**inp, beta=0.5).losses.item() == pytest.approx(bwd, rel=1e-12)
    assert get_loss("rpo_fwd")(**inp, beta=0.5).losses.item() == pytest.approx(fwd, rel=1e-12)
    assert bwd == pytest.approx(0.0671308, rel=1e-5) and fwd == pytest.approx(0.0826077, rel=1e-5)


def test_multi_with_two_responses_equals_pairwise():
    """k = 2: softmax over two responses is a Bernoulli of the gap, and there is one pair."""
    inp = pair(seed=8)
    scores_w, scores_l = rand(16, 20, 3.0), rand(16, 21, 3.0)
    multi = dict(logps=torch.stack([inp["chosen_logps"], inp["rejected_logps"]], 1),
                 ref_logps=torch.stack([inp["ref_chosen_logps"], inp["ref_rejected_logps"]], 1),
                 scores=torch.stack([scores_w, scores_l], 1))
    for pairwise, m in (("rpo_bwd", "rpo_multi"), ("rpo_bwd", "rpo_bwd_all_pairs"),
                        ("rpo_fwd", "rpo_fwd_all_pairs"), ("rpo_sqr", "rpo_sqr_all_pairs")):
        p = get_loss(pairwise)(**inp, chosen_scores=scores_w, rejected_scores=scores_l, beta=0.3, eta=2.0)
        q = get_loss(m)(**multi, beta=0.3, eta=2.0)
        torch.testing.assert_close(q.losses, p.losses, rtol=1e-12, atol=1e-14)


def test_all_pairs_is_mean_over_pairs():
    """k = 3: the mean of the three pairwise losses (0,1), (0,2), (1,2)."""
    lp, ref, sc = rand((5, 3), 30), rand((5, 3), 31), rand((5, 3), 32, 4.0)
    out = get_loss("rpo_fwd_all_pairs")(logps=lp, ref_logps=ref, scores=sc, beta=0.7, eta=0.5).losses
    pw = get_loss("rpo_fwd")
    expected = sum(pw(chosen_logps=lp[:, i], rejected_logps=lp[:, j], ref_chosen_logps=ref[:, i],
                      ref_rejected_logps=ref[:, j], chosen_scores=sc[:, i], rejected_scores=sc[:, j],
                      beta=0.7, eta=0.5).losses for i, j in ((0, 1), (0, 2), (1, 2))) / 3
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)


def test_rpo_multi_hand_value():
    """k = 3, scores R = (0, 0, log 2), eta = 1 -> target p = (1/4, 1/4, 1/2); implicit rewards all equal
    -> q = (1/3, 1/3, 1/3). KL(p||q) = 2*(1/4)log(3/4) + (1/2)log(3/2) = -0.1438410 + 0.2027326 = 0.0588915."""
    lp = torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64)
    out = get_loss("rpo_multi")(logps=lp, ref_logps=lp, scores=torch.tensor([[0.0, 0.0, math.log(2)]],
                                dtype=torch.float64))
    assert out.losses.item() == pytest.approx(0.5 * math.log(0.75) + 0.5 * math.log(1.5), rel=1e-12)
    assert out.losses.item() == pytest.approx(0.0588915, rel=1e-6)


def test_rloo_hand_value():
    """k = 3, R = (1, 2, 6), logp = (-1, -2, -3). Leave-one-out weights: 1 - (2+6)/2 = -3, 2 - 3.5 = -1.5,
    6 - 1.5 = 4.5. Loss = -(1/3)((-3)(-1) + (-1.5)(-2) + 4.5(-3)) = -(1/3)(3 + 3 - 13.5) = 2.5.
    Best-scored reward 6, worst 1."""
    out = get_loss("rloo")(logps=torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64),
                           scores=torch.tensor([[1.0, 2.0, 6.0]], dtype=torch.float64))
    assert out.losses.item() == pytest.approx(2.5, rel=1e-12)
    assert out.chosen_rewards.item() == 6.0 and out.rejected_rewards.item() == 1.0


def test_rloo_kl_penalty_folded_into_reward():
    """beta = 0.5, logp - logp_ref = (1, 0, -2): R' = R - 0.5*(1, 0, -2) = (0.5, 2, 7).
    Weights: 0.5 - 4.5 = -4, 2 - 3.75 = -1.75, 7 - 1.25 = 5.75; loss = -(1/3)(4 + 3.5 - 17.25) = 3.25."""
    lp = torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64)
    out = get_loss("rloo")(logps=lp, ref_logps=lp - torch.tensor([[1.0, 0.0, -2.0]], dtype=torch.float64),
                           scores=torch.tensor([[1.0, 2.0, 6.0]], dtype=torch.float64), beta=0.5)
    assert out.losses.item() == pytest.approx(3.25, rel=1e-12)
    torch.testing.assert_close(out.rewards, torch.tensor([[0.5, 2.0, 7.0]], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 4, 7])
def test_rloo_is_the_rpo_sqr_limit_with_stopgrad_reference(k):
    """pi_ref = stopgrad(pi) makes d_pi = 0 in value; the gradient of the all-pairs mean of (d_pi - d_r)^2
    w.r.t. logp_m is (2/(k(k-1))) * sum_{j != m} 2 (0 - eta (R_m - R_j)) beta = -(4 eta beta / k) w_m,
    i.e. 4 eta beta times RLOO's gradient -w_m / k."""
    scores = rand((6, k), 40, 5.0)
    beta, eta = 0.7, 1.3
    lp1 = rand((6, k), 41, 20.0).requires_grad_(True)
    sqr = get_loss("rpo_sqr_all_pairs")(logps=lp1, ref_logps=lp1.detach(), scores=scores, beta=beta, eta=eta)
    (g_sqr,) = torch.autograd.grad(sqr.losses.sum(), lp1)
    lp2 = lp1.detach().clone().requires_grad_(True)
    (g_rloo,) = torch.autograd.grad(get_loss("rloo")(logps=lp2, scores=scores).losses.sum(), lp2)
    torch.testing.assert_close(g_sqr, 4 * eta * beta * g_rloo, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(n for n, f in LOSSES.items() if f.multi_response))
def test_multi_response_contract(name):
    loss = LOSSES[name]
    sig = inspect.signature(loss)
    assert {p.kind for p in sig.parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}
    assert {"logps", "lengths", "scores"} <= set(sig.parameters) and "scores" in loss.requires
    lp = rand((3, 4), 50).requires_grad_(True)
    scores = torch.tensor([[0.0, 3.0, 1.0, -1.0], [2.0, 1.0, 0.0, 5.0], [1.0, 0.0, 4.0, 2.0]],
                          dtype=torch.float64)
    inputs = dict(logps=lp, scores=scores, lengths=torch.full((3, 4), 5))
    if "ref_logps" in sig.parameters:
        inputs["ref_logps"] = rand((3, 4), 51)
    out = loss(**inputs)
    assert isinstance(out, LossOutput) and out.losses.shape == (3,) and out.rewards.shape == (3, 4)
    assert not out.rewards.requires_grad and not out.chosen_rewards.requires_grad
    torch.testing.assert_close(out.chosen_rewards, out.rewards[torch.arange(3), torch.tensor([1, 3, 2])])
    torch.testing.assert_close(out.rejected_rewards, out.rewards[torch.arange(3), torch.tensor([3, 2, 1])])
    out.losses.sum().backward()
    assert torch.isfinite(lp.grad).all() and lp.grad.abs().sum() > 0
    for missing in loss.requires:
        with pytest.raises(MissingInputError, match=missing):
            loss(**{k: v for k, v in inputs.items() if k != missing})
    with pytest.raises(UserError, match="k >= 2"):
        loss(**{k: v[:, :1] for k, v in inputs.items()})
