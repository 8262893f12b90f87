"""Parity with TRL 1.16: the same inputs through TRL's own loss code and through ours, agreeing to 1e-6.

TRL keeps its losses inside trainer methods, so we call those methods on stub objects that carry just
the attributes they read:

- ``DPOTrainer._compute_loss(stub, model, inputs, False)`` with a stub model whose ``log_probs`` are
  per-token log-probs we choose (their row sums are our ``chosen_logps`` / ``rejected_logps``) and
  ``precompute_ref_logps=True`` so the reference log-probs come from the batch. It returns the batch
  mean of the per-sequence loss, which we compare with the mean of ours (and per example with B = 1).
- ``CPOTrainer.cpo_loss(stub, chosen_logps, rejected_logps)``: per-example losses and rewards. TRL
  passes average log-probs for ``simpo``/``ipo`` and summed ones otherwise; so do we here.

The real trainers on a tiny model are exercised in ``test_trl_trainers.py`` (slow).
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alphapo.losses import TRL_CPO_LOSS_NAMES, TRL_DPO_LOSS_NAMES, compose, get_loss

pytestmark = pytest.mark.trl

dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
cpo_trainer = pytest.importorskip("trl.experimental.cpo.cpo_trainer")

T_LEN = 12  # padded sequence length of the fake batch


class _Accelerator:
    device = torch.device("cpu")

    def gather(self, x):
        return x

    gather_for_metrics = gather


class _FakeModel:
    """Stands in for the policy: returns fixed per-token log-probs (zero outside the completion)."""

    training = True

    def __init__(self, per_token):
        self.per_token = per_token

    def __call__(self, **kwargs):
        n, t = self.per_token.shape
        return SimpleNamespace(log_probs=self.per_token, entropy=torch.zeros(n, t), mean_logits=torch.zeros(n, t),
                               is_top1=torch.zeros(n, t, dtype=torch.bool))


def make_batch(b, seed, dtype=torch.float64, equal_lengths=False, scale=1.0):
    """A fake DPO batch and the matching (B,) inputs for our losses.

    Completion i occupies the last ``L_i`` positions; per-token log-probs are uniform in [-scale, 0).
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((2 * b,), 6) if equal_lengths else torch.randint(1, T_LEN - 1, (2 * b,), generator=g)
    completion_mask = torch.zeros(2 * b, T_LEN, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        completion_mask[row, T_LEN - n:] = 1
    shift = completion_mask[:, 1:].to(dtype)
    per_token = -torch.rand(2 * b, T_LEN - 1, generator=g, dtype=torch.float64).to(dtype) * scale * shift
    ref = -torch.rand(2 * b, generator=g, dtype=torch.float64).to(dtype) * scale * lengths.to(dtype)
    logps = per_token.sum(dim=1)
    inputs = {"input_ids": torch.zeros(2 * b, T_LEN, dtype=torch.long), "attention_mask": torch.ones(2 * b, T_LEN),
              "completion_mask": completion_mask, "ref_chosen_logps": ref[:b], "ref_rejected_logps": ref[b:]}
    ours = dict(chosen_logps=logps[:b], rejected_logps=logps[b:], ref_chosen_logps=ref[:b],
                ref_rejected_logps=ref[b:], chosen_lengths=lengths[:b], rejected_lengths=lengths[b:])
    return _FakeModel(per_token), inputs, ours


def trl_dpo_loss(loss_type, model, inputs, *, beta, label_smoothing=0.0, discopop_tau=0.05,
                 f_divergence_type="reverse_kl", f_alpha_divergence_coef=1.0):
    stub = SimpleNamespace(
        model=model, accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type=f_divergence_type, f_alpha_divergence_coef=f_alpha_divergence_coef,
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=discopop_tau), use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    return dpo_trainer.DPOTrainer._compute_loss(stub, model, inputs, False)


# TRL hyper-parameters -> ours, per DPO loss_type
DPO_CASES = {
    "sigmoid": ({}, {}),
    "hinge": ({}, {}),
    "ipo": ({}, {}),
    "exo_pair": ({"label_smoothing": 1e-3}, {"eps": 1e-3}),
    "nca_pair": ({}, {}),
    "robust": ({"label_smoothing": 0.2}, {"eps": 0.2}),
    "bco_pair": ({}, {}),
    "sppo_hard": ({}, {}),
    "aot": ({"label_smoothing": 0.1}, {"eps": 0.1}),
    "aot_unpaired": ({"label_smoothing": 0.1}, {"eps": 0.1}),
    "apo_zero": ({}, {}),
    "apo_down": ({}, {}),
    "discopop": ({"discopop_tau": 0.3}, {"tau": 0.3}),
    "sft": ({}, {}),
    "sigmoid_norm": ({}, {}),
}


def test_every_trl_dpo_loss_type_has_a_parity_case():
    assert set(DPO_CASES) == set(TRL_DPO_LOSS_NAMES)


@pytest.mark.parametrize("loss_type", sorted(DPO_CASES))
@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_dpo_trainer_parity_batch_mean(loss_type, beta):
    trl_kw, our_kw = DPO_CASES[loss_type]
    ours_fn = get_loss(TRL_DPO_LOSS_NAMES[loss_type])
    # sft: TRL takes a token-weighted batch mean, ours is per example; equal lengths make them the same.
    seed = sorted(DPO_CASES).index(loss_type)
    model, inputs, ours = make_batch(8, seed=seed, equal_lengths=loss_type == "sft", scale=2.0)
    expected = trl_dpo_loss(loss_type, model, inputs, beta=beta, **trl_kw)
    ours_kw = {k: v for k, v in ours.items() if k in inspect.signature(ours_fn).parameters}
    hp = {"beta": beta} if loss_type != "sft" else {}
    got = ours_fn(**ours_kw, **hp, **our_kw).losses.mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("loss_type", sorted(set(DPO_CASES) - {"sft"}))
def test_dpo_trainer_parity_per_example(loss_type):
    """B = 1 batches: the per-example loss itself matches (aot with one pair is the plain smoothed BT)."""
    trl_kw, our_kw = DPO_CASES[loss_type]
    ours_fn = get_loss(TRL_DPO_LOSS_NAMES[loss_type])
    for seed in range(3):
        model, inputs, ours = make_batch(1, seed=100 + seed, scale=3.0)
        expected = trl_dpo_loss(loss_type, model, inputs, beta=0.5, **trl_kw)
        got = ours_fn(**ours, beta=0.5, **our_kw).losses  # every non-sft DPO loss takes the ref inputs
        assert got.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-12)


def test_sft_token_weighting_reproduced_with_explicit_chosen_nll():
    """TRL's sft is the token-weighted batch mean; passing chosen_nll_i = -logp_i * B / sum(L) gives it."""
    model, inputs, ours = make_batch(6, seed=7)
    expected = trl_dpo_loss("sft", model, inputs, beta=0.1)
    b = ours["chosen_lengths"].shape[0]
    nll = -ours["chosen_logps"] * b / ours["chosen_lengths"].sum()
    got = get_loss("sft")(**{k: v for k, v in ours.items() if not k.startswith("ref")}, chosen_nll=nll)
    assert got.losses.mean().item() == pytest.approx(expected.item(), rel=1e-9)
    # ...and ours differs from TRL's when lengths differ (per-example vs token-weighted mean)
    plain = get_loss("sft")(**{k: v for k, v in ours.items() if not k.startswith("ref")}).losses.mean()
    assert abs(plain.item() - expected.item()) > 1e-6


@pytest.mark.parametrize("alpha", [0.5, -0.7, 1.0])
def test_fdpo_alpha_matches_trl_alpha_divergence(alpha):
    """TRL's f'(t) = (t^(c-1) - 1)/(c-1) with c = f_alpha_divergence_coef equals our (1 - t^-alpha)/alpha at
    c = 1 - alpha; TRL's dict of clamps only knows float16/bfloat16/float32, so this runs in float32."""
    model, inputs, ours = make_batch(8, seed=11, dtype=torch.float32, scale=0.3)
    expected = trl_dpo_loss("sigmoid", model, inputs, beta=0.5, f_divergence_type="alpha_divergence",
                            f_alpha_divergence_coef=1.0 - alpha)
    ours64 = {k: v.double() if v.is_floating_point() else v for k, v in ours.items()}
    got = get_loss("fdpo_alpha")(**ours64, alpha=alpha, beta=0.5).losses.mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    if alpha == 1.0:  # TRL's forward_kl is the same loss
        fwd = trl_dpo_loss("sigmoid", model, inputs, beta=0.5, f_divergence_type="forward_kl")
        assert got.item() == pytest.approx(fwd.item(), rel=1e-6)


def test_discopop_trl_gives_nan_for_very_negative_margin_ours_is_finite():
    """z = beta*h = -100: TRL computes exp(100) * sigmoid(-100/0.05) = inf * 0 = nan (float32).
    The true loss is (1 - sigma(-2000)) * softplus(100) + exp(100 - 2000 - ...) = 100.0 (to float precision)."""
    model, inputs, ours = make_batch(1, seed=3, dtype=torch.float32)
    # force h = -1000 with beta = 0.1: shift the chosen reference log-prob up by 1000 + current h
    h = (ours["chosen_logps"] - ours["ref_chosen_logps"]) - (ours["rejected_logps"] - ours["ref_rejected_logps"])
    inputs["ref_chosen_logps"] = inputs["ref_chosen_logps"] + h + 1000.0
    ours["ref_chosen_logps"] = inputs["ref_chosen_logps"]
    trl_value = trl_dpo_loss("discopop", model, inputs, beta=0.1)
    assert torch.isnan(trl_value)
    got = get_loss("discopop")(**ours, beta=0.1)
    assert got.losses.item() == pytest.approx(100.0, rel=1e-5)


# ---------------------------------------------------------------------------------------------------- CPO


def trl_cpo_loss(loss_type, chosen, rejected, *, beta, alpha=0.0, label_smoothing=0.0, simpo_gamma=0.5):
    stub = SimpleNamespace(beta=beta, alpha=alpha, loss_type=loss_type, simpo_gamma=simpo_gamma,
                           label_smoothing=label_smoothing, accelerator=_Accelerator())
    return cpo_trainer.CPOTrainer.cpo_loss(stub, chosen, rejected)


def cpo_inputs(b=16, seed=0, dtype=torch.float64, avg_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    lengths_w, lengths_l = torch.randint(1, 40, (b,), generator=g), torch.randint(1, 40, (b,), generator=g)
    s_w = -torch.rand(b, generator=g, dtype=torch.float64) * avg_scale
    s_l = -torch.rand(b, generator=g, dtype=torch.float64) * avg_scale
    ours = dict(chosen_logps=(s_w * lengths_w).to(dtype), rejected_logps=(s_l * lengths_l).to(dtype),
                chosen_lengths=lengths_w, rejected_lengths=lengths_l)
    return ours


# TRL CPO loss_type -> (does TRL feed average log-probs?, TRL kwargs, our kwargs). TRL's ``alphapo``
# is ``simpo`` with cpo_alpha = 0 (CPOConfig.__post_init__), so its loss method sees loss_type="simpo".
CPO_CASES = {
    "sigmoid": (False, {"label_smoothing": 0.1}, {"eps": 0.1}),
    "hinge": (False, {}, {}),
    "ipo": (True, {}, {}),
    "simpo": (True, {"simpo_gamma": 0.7, "label_smoothing": 0.1}, {"gamma": 0.7, "eps": 0.1}),
    "alphapo": (True, {"simpo_gamma": 0.7, "alpha": 0.3}, {"gamma": 0.7, "alpha": 0.3}),
}


def test_every_trl_cpo_loss_type_has_a_parity_case():
    assert set(CPO_CASES) == set(TRL_CPO_LOSS_NAMES)


@pytest.mark.parametrize("loss_type", sorted(CPO_CASES))
@pytest.mark.parametrize("beta", [0.1, 2.5])
def test_cpo_trainer_parity(loss_type, beta):
    average, trl_kw, our_kw = CPO_CASES[loss_type]
    scale = 3.0 if average else 0.05  # summed log-probs stay moderate so TRL's exp(-alpha*logp) is exact
    ours = cpo_inputs(seed=len(loss_type), avg_scale=scale)
    w, lw = ours["chosen_logps"], ours["chosen_lengths"]
    r, lr = ours["rejected_logps"], ours["rejected_lengths"]
    trl_type = "simpo" if loss_type == "alphapo" else loss_type
    losses, cr, rr = trl_cpo_loss(trl_type, w / lw if average else w, r / lr if average else r, beta=beta,
                                  **trl_kw)
    name = TRL_CPO_LOSS_NAMES[loss_type]
    extra = {} if name == "alphapo" else {"nll_weight": 0.0}  # TRL adds its NLL outside cpo_loss
    out = get_loss(name)(**ours, beta=beta, **our_kw, **extra)
    torch.testing.assert_close(out.losses, losses, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, cr, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(out.rejected_rewards, rr, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("loss_type,link", [("sigmoid", "smoothed_sigmoid"), ("hinge", "hinge"),
                                            ("ipo", "squared"), ("simpo", "smoothed_sigmoid")])
@pytest.mark.parametrize("alpha", [-1.5, 0.8])
def test_cpo_alpha_shape_on_every_trl_loss_type(loss_type, link, alpha):
    """TRL's CPO ``alpha`` reshapes the reward for every loss_type; ours is compose(shape="alpha", link=...)."""
    average = loss_type in ("ipo", "simpo")
    ours = cpo_inputs(seed=5, avg_scale=2.0 if average else 0.05)
    w, lw = ours["chosen_logps"], ours["chosen_lengths"]
    r, lr = ours["rejected_logps"], ours["rejected_lengths"]
    losses, cr, _ = trl_cpo_loss(loss_type, w / lw if average else w, r / lr if average else r, beta=1.5,
                                 alpha=alpha, label_smoothing=0.05 if "sigmoid" in link else 0.0, simpo_gamma=0.4)
    loss = compose(shape="alpha", link=link, normalize="mean" if average else "sum", reference="none")
    kw = {"eps": 0.05} if link == "smoothed_sigmoid" else {}
    out = loss(**ours, beta=1.5, alpha=alpha, gamma=0.4 if loss_type == "simpo" else 0.0, **kw)
    torch.testing.assert_close(out.losses, losses, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, cr, rtol=1e-6, atol=1e-12)


def test_trl_alphapo_overflows_where_ours_is_finite_and_correct():
    """float32, AlphaPO with alpha = 10, average log-probs s_w = -9, s_l = -10 (plausible for a rare
    continuation): TRL forms exp(s)^-alpha = e^90 and e^100 (> float32 max 3.4e38 = e^88.7), so
    r = -inf and the logit is -inf - (-inf) = nan. The exact reward gap is (beta/alpha)(e^100 - e^90)
    = 0.25 * 2.69e43 > 0, so the exact loss is log(1 + e^-2.7e43) = 0; ours returns 0 with finite
    gradients. With the preference reversed the exact loss is ~6.7e42 (beyond float32); ours stays finite
    (exponents capped at 60) and its gradient still raises the chosen likelihood."""
    lw = lr = torch.tensor([4])
    w = torch.tensor([-36.0], requires_grad=True)  # s_w = -9
    r = torch.tensor([-40.0], requires_grad=True)  # s_l = -10
    trl_losses, _, _ = trl_cpo_loss("simpo", (w / lw).detach(), (r / lr).detach(), beta=2.5, alpha=10.0,
                                    simpo_gamma=0.25)
    assert torch.isnan(trl_losses).all()
    out = get_loss("alphapo")(chosen_logps=w, rejected_logps=r, chosen_lengths=lw, rejected_lengths=lr,
                              alpha=10.0, beta=2.5, gamma=0.25)
    assert out.losses.item() == 0.0
    out.losses.sum().backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(r.grad).all()

    w2 = torch.tensor([-40.0], requires_grad=True)  # reversed: s_w = -10, s_l = -9
    r2 = torch.tensor([-36.0], requires_grad=True)
    out = get_loss("alphapo")(chosen_logps=w2, rejected_logps=r2, chosen_lengths=lw, rejected_lengths=lr,
                              alpha=10.0, beta=2.5, gamma=0.25)
    assert torch.isfinite(out.losses).all() and out.losses.item() > 1e25
    out.losses.sum().backward()
    assert torch.isfinite(w2.grad).all() and w2.grad.item() < 0 < r2.grad.item()


def test_trl_cpo_alpha_on_summed_logps_overflows_for_ordinary_lengths():
    """TRL's CPO ``alpha`` on loss_type="sigmoid" uses *summed* log-probs: alpha = 0.5 with logp = -200
    (a 100-token answer at -2 nats/token) needs exp(100) -> inf in float32 -> nan. Exact reward gap
    (beta/alpha)(e^105 - e^100) > 0, exact loss 0; ours returns 0."""
    w, r = torch.tensor([-200.0]), torch.tensor([-210.0])
    trl_losses, _, _ = trl_cpo_loss("sigmoid", w, r, beta=0.1, alpha=0.5)
    assert torch.isnan(trl_losses).all()
    loss = compose(shape="alpha", link="sigmoid", normalize="sum", reference="none")
    out = loss(chosen_logps=w, rejected_logps=r, chosen_lengths=torch.tensor([100]),
               rejected_lengths=torch.tensor([100]), alpha=0.5, beta=0.1)
    assert out.losses.item() == 0.0
    # the same inputs in float64 through TRL's formula (no overflow there) agree with ours in float32
    trl64, _, _ = trl_cpo_loss("sigmoid", w.double() / 10, r.double() / 10, beta=0.1, alpha=0.5)
    ours64 = loss(chosen_logps=w.double() / 10, rejected_logps=r.double() / 10, chosen_lengths=torch.tensor([1]),
                  rejected_lengths=torch.tensor([1]), alpha=0.5, beta=0.1).losses
    assert ours64.item() == pytest.approx(trl64.item(), rel=1e-9)
    assert math.isfinite(ours64.item())


def test_float32_precision_where_trl_cancels():
    """Nearly equal average log-probs: s_w = -10, s_l = -10.000045 (float32: -10.0000448), alpha = 1,
    beta = 1, gamma = 0. Exact gap e^{10.0000448} - e^{10} = 0.98733, loss softplus(-gap) = 0.3166911.
    TRL forms e^{10} = 22026.47 in float32 (ulp 0.002) twice and subtracts: it returns 0.3164268
    (8e-4 relative error). Ours forms s_w - s_l exactly first: 0.3166910 (5e-8)."""
    import mpmath as mp

    s_w = torch.tensor([-10.0], dtype=torch.float32)
    s_l = torch.tensor([-10.000045], dtype=torch.float32)
    with mp.workdps(50):
        sw, sl = mp.mpf(float(s_w)), mp.mpf(float(s_l))
        exact = float(mp.log1p(mp.exp(-(mp.exp(-sl) - mp.exp(-sw)))))
    trl_losses, _, _ = trl_cpo_loss("simpo", s_w, s_l, beta=1.0, alpha=1.0, simpo_gamma=0.0)
    one = torch.tensor([1])
    ours = get_loss("alphapo")(chosen_logps=s_w, rejected_logps=s_l, chosen_lengths=one, rejected_lengths=one,
                               alpha=1.0, beta=1.0, gamma=0.0).losses
    assert ours.dtype == torch.float32
    assert abs(ours.item() - exact) / exact < 1e-6
    assert abs(trl_losses.item() - exact) / exact > 1e-4  # TRL: cancellation of two rounded e^10
