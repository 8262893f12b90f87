"""Diagnostics are pure functions; expected values are derived by hand in the docstrings."""

from __future__ import annotations

import math

import pytest
import torch

from alphapo.training.metrics import (
    kl_estimates,
    preference_metrics,
    robust_summary,
    sampled_kl_estimates,
    tukey_fences,
)
from alphapo.training.optim import make_scheduler


def test_robust_summary_drops_tukey_outliers():
    """[1, 2, 3, 4, 100]: q1 = 2, median 3, q3 = 4, IQR 2, fences [-1, 7] -> 100 dropped from min/max."""
    s = robust_summary(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert s == {"mean": 22.0, "q1": 2.0, "median": 3.0, "q3": 4.0, "min": 1.0, "max": 4.0}
    assert tukey_fences(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])) == (-1.0, 7.0)


def test_robust_summary_single_value():
    assert robust_summary(torch.tensor([-2.5])) == {s: -2.5 for s in ("mean", "q1", "median", "q3", "min", "max")}


def test_preference_metrics_hand_computed():
    """See the docstring of preference_metrics for the arithmetic."""
    m = preference_metrics(
        chosen_logps=torch.tensor([-2.0, -6.0]), rejected_logps=torch.tensor([-3.0, -4.0]),
        chosen_lengths=torch.tensor([2.0, 3.0]), rejected_lengths=torch.tensor([1.0, 4.0]),
        chosen_rewards=torch.tensor([1.0, 0.0]), rejected_rewards=torch.tensor([0.0, 1.0]),
        losses=torch.tensor([0.5, 1.5]))
    assert m["loss"] == 1.0
    assert (m["rewards/chosen"], m["rewards/rejected"], m["rewards/margins"]) == (0.5, 0.5, 0.0)
    assert m["rewards/accuracies"] == 0.5
    assert (m["logps/chosen"], m["logps/rejected"]) == (-4.0, -3.5)
    assert m["lnorm/chosen/mean"] == -1.5 and m["lnorm/rejected/mean"] == -2.0
    assert m["lnorm/margin/mean"] == 0.5
    # two values [-1, 2]: q1 = -1 + 0.25 * 3 = -0.25, median 0.5, q3 = 1.25; no outliers
    assert m["lnorm/margin/q1"] == -0.25 and m["lnorm/margin/q3"] == 1.25
    assert (m["lnorm/margin/min"], m["lnorm/margin/max"]) == (-1.0, 2.0)
    assert not any(k.startswith("kl/") for k in m)  # no reference, no KL


def test_kl_estimates_hand_computed():
    """d = [0, ln 2]: k1 = ln2/2; per token over 4 tokens: ln2/4; no k3 on an off-policy batch."""
    m = kl_estimates(torch.tensor([0.0, math.log(2.0)]), 4.0)
    assert m == pytest.approx({"kl/seq_k1": math.log(2) / 2, "kl/token_k1": math.log(2) / 4})


def test_off_policy_batch_with_a_pushed_down_rejected_response_logs_no_huge_k3():
    """The 1e19 of the old ``kl/seq_k3``: a rejected response 45 nats below the reference gave
    exp(45) / 2 = 1.7e19 as the batch's k3. Now only the k1 estimates are logged, and they are -22.5
    (sequence) and -45 / 10 tokens = -4.5 (per token)."""
    zero = torch.zeros(1)
    m = preference_metrics(chosen_logps=torch.tensor([-5.0]), rejected_logps=torch.tensor([-50.0]),
                           chosen_lengths=torch.tensor([4.0]), rejected_lengths=torch.tensor([6.0]),
                           chosen_rewards=zero, rejected_rewards=zero, losses=zero,
                           ref_chosen_logps=torch.tensor([-5.0]), ref_rejected_logps=torch.tensor([-5.0]))
    assert {k: v for k, v in m.items() if k.startswith("kl/")} == pytest.approx(
        {"kl/seq_k1": -22.5, "kl/token_k1": -4.5})


def test_sampled_kl_hand_computed_and_stable():
    """On-policy samples: d = [0, ln 2] -> k1 = ln2/2, k3 = (1/2 - 1 + ln 2)/2, per token (4) ln2/4.
    A large log-ratio: d = [-45, 45] -> k1 = 0, k3 = (e^45 - 2 + e^-45)/2 exactly (finite, the estimator's
    true value). A tiny one: d = 1e-6 -> k3 = d^2/2 - d^3/6 = 5e-13 (exp(-d) - 1 + d in float32 gives 0)."""
    m = sampled_kl_estimates(torch.tensor([0.0, math.log(2.0)]), 4.0)
    assert m == pytest.approx({"k1": math.log(2) / 2, "k3": (0.5 - 1 + math.log(2)) / 2,
                               "token_k1": math.log(2) / 4})
    big = sampled_kl_estimates(torch.tensor([-45.0, 45.0], dtype=torch.float64), 2.0)
    assert big["k1"] == 0.0
    assert big["k3"] == pytest.approx((math.exp(45) - 2 + math.exp(-45)) / 2, rel=1e-12)
    tiny = sampled_kl_estimates(torch.tensor([1e-6], dtype=torch.float64), 1.0)
    assert tiny["k3"] == pytest.approx(0.5e-12 - 1e-18 / 6, rel=1e-6)
    assert sampled_kl_estimates(torch.tensor([-1.0, 2.0]), 3.0)["k3"] >= 0.0
    with pytest.raises(ValueError, match="at least one"):
        sampled_kl_estimates(torch.zeros(0), 0.0)


def test_kl_zero_when_policy_is_reference():
    lp = torch.tensor([-3.0, -7.0])
    m = preference_metrics(chosen_logps=lp, rejected_logps=lp, chosen_lengths=torch.ones(2),
                           rejected_lengths=torch.ones(2), chosen_rewards=torch.zeros(2),
                           rejected_rewards=torch.zeros(2), losses=torch.zeros(2),
                           ref_chosen_logps=lp, ref_rejected_logps=lp)
    assert m["kl/seq_k1"] == 0.0 and m["kl/token_k1"] == 0.0 and "kl/seq_k3" not in m


def _factors(kind: str, total: int, warmup: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, kind=kind, total=total, warmup=warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _hand(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Linear warmup step / warmup; then cosine 0.5 (1 + cos(pi p)), linear 1 - p or constant 1, with
    p = (step - warmup) / (total - warmup) (the formulas the trainer used before transformers' schedulers)."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    p = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1.0 - p) if kind == "linear" else max(0.0, 0.5 * (1.0 + math.cos(math.pi * p)))


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_lr_schedule_factors_by_hand(kind):
    """total 10, warmup 1: step 0 -> 0, step 1 -> 1; cosine step 4 -> 0.5 (1 + cos(pi/3)) = 0.75, linear
    step 4 -> 1 - 3/9 = 2/3; and every step of a 17-step run with 3 warmup steps matches the formulas
    (cosine bit for bit; linear to 1 ulp: transformers computes (total - step) / (total - warmup))."""
    got = _factors(kind, 10, 1)
    assert got[0] == 0.0 and got[1] == 1.0
    assert got[4] == pytest.approx({"cosine": 0.75, "linear": 2 / 3, "constant": 1.0}[kind], rel=1e-15)
    got = _factors(kind, 17, 3)
    hand = [_hand(s, total=17, warmup=3, kind=kind) for s in range(17)]
    if kind == "linear":
        assert got == pytest.approx(hand, rel=1e-15, abs=1e-16)
    else:
        assert got == hand
