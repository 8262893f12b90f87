"""Training diagnostics as pure functions of per-example tensors (no model, no I/O).

Names follow TRL where TRL logs the same quantity (``rewards/chosen``, ``rewards/rejected``,
``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``); ``loss``,
``grad_norm``, ``learning_rate`` and throughput are added by the loop.

``logps/chosen`` / ``logps/rejected`` follow TRL's two trainers (``logps="sum"`` or ``"token_mean"`` of
:func:`preference_metrics`; the trainer picks it with :func:`logps_reduction`): TRL's DPOTrainer logs the
batch mean of the *summed* completion log-prob for every loss (its ``ipo`` included), and TRL's
CPOTrainer logs the batch mean of the per-token *average* for its length-normalised losses (``simpo``,
``ipo``, ``alphapo``). So a reference-free loss that compares length-normalised log-probs (``simpo``,
``alphapo``, ``cpo_simpo``, ``cpo_ipo``; declared by ``alphapo.losses.contract.length_normalized``) logs
the average, and every other loss the sum. The sums are always logged as ``logps_sum/chosen`` /
``logps_sum/rejected`` (the same numbers as ``logps/*`` where those are sums). AlphaPO (section 3.3,
Figure 2) tracks three *length-normalised* quantities over an epoch, and so do we, per logging window:

- ``lnorm/chosen``   = ``logp(y_w) / |y_w|``  (preferred likelihood),
- ``lnorm/rejected`` = ``logp(y_l) / |y_l|``  (dispreferred likelihood),
- ``lnorm/margin``   = ``lnorm/chosen - lnorm/rejected`` (the length-normalised margin of section 3.1),

each summarised by :func:`robust_summary`: ``/mean``, ``/q1``, ``/median``, ``/q3`` (linear
interpolation, ``torch.quantile``'s default) and ``/min``, ``/max`` *after outlier removal* with Tukey's
rule: values outside ``[q1 - 1.5 IQR, q3 + 1.5 IQR]`` are dropped before taking min and max (the paper's
Figure 2 says "min and max are computed after removing outliers" without naming the rule; Tukey's
fences are the box-plot convention of its Figures 15-16). The mean and quartiles use all values.

The same three quantities over a *fixed* probe set of pairs (:func:`probe_metrics`, the trainer's
``diagnostics.probe_size``) are the displacement curve of AlphaPO Figure 2 without the batch-to-batch
noise: ``probe/chosen_lnorm``, ``probe/rejected_lnorm``, ``probe/margin_lnorm`` (means over the probe
set), each with ``/q1``, ``/median``, ``/q3``, ``/min``, ``/max`` as above; the margin quartiles of the
last probe pass are AlphaPO Figure 13's end-of-training box plot.

KL(policy || reference) on the batch's responses (``kl/...``, only when reference log-probs exist: for
losses that use them, or with the trainer's ``diagnostics.reference_kl``),
with ``d = logp(y) - logp_ref(y)`` per response (chosen and rejected pooled), by :func:`kl_estimates`:

- ``kl/seq_k1`` = ``mean(d)``: the k1 estimator, unbiased for KL(pi || pi_ref) when ``y ~ pi``;
- ``kl/token_k1`` = ``sum(d) / sum(|y|)``: the k1 estimate per completion token.

Deviations: the responses come from the preference data, not from the current policy, so these are
importance-free estimates on an off-policy sample; they track drift from the reference, not the exact
KL. Schulman's k3 estimator (``r - 1 - log r`` with ``r = pi_ref(y) / pi(y) = exp(-d)``) is *not* logged
on these batches: it is unbiased only because ``E_{y~pi}[r] = 1``, which fails off-policy, and its
``exp(-d)`` is dominated by the one response the policy has pushed down most. Preference training pushes
rejected responses down by tens of nats (``d = -45`` gives ``exp(45) = 3.5e19``), so the batch mean was a
meaningless number of order 1e19. k3 is computed only where it is a valid estimator, on responses
sampled from the policy itself: :func:`sampled_kl_estimates` (the toy job's ``eval_steps``,
``alphapo.experiments.toy``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

SUMMARY_STATS = ("mean", "q1", "median", "q3", "min", "max")
LNORM_KEYS = ("lnorm/chosen", "lnorm/rejected", "lnorm/margin")
PROBE_KEYS = ("probe/chosen_lnorm", "probe/rejected_lnorm", "probe/margin_lnorm")
LogpsReduction = Literal["sum", "token_mean"]


def tukey_fences(values: torch.Tensor, k: float = 1.5) -> tuple[float, float]:
    """``(q1 - k*IQR, q3 + k*IQR)`` of a 1-D tensor (linear-interpolated quartiles)."""
    v = values.detach().double().flatten()
    q1, q3 = torch.quantile(v, torch.tensor([0.25, 0.75], dtype=v.dtype)).tolist()
    iqr = q3 - q1
    return q1 - k * iqr, q3 + k * iqr


def robust_summary(values: torch.Tensor, k: float = 1.5) -> dict[str, float]:
    """Mean, quartiles and Tukey-trimmed min/max of a 1-D tensor of ``n >= 1`` values.

    Example (hand-computed): values ``[1, 2, 3, 4, 100]`` -> q1 = 2, median = 3, q3 = 4 (linear
    interpolation at positions 1, 2, 3 of the sorted list), IQR = 2, fences ``[-1, 7]``, so 100 is an
    outlier: min = 1, max = 4; mean = 110 / 5 = 22.
    """
    v = values.detach().double().flatten()
    if v.numel() == 0:
        return {s: float("nan") for s in SUMMARY_STATS}
    q1, med, q3 = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype)).tolist()
    lo, hi = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    kept = v[(v >= lo) & (v <= hi)]
    if kept.numel() == 0:  # only when quantiles are non-finite
        kept = v
    return {"mean": v.mean().item(), "q1": q1, "median": med, "q3": q3,
            "min": kept.min().item(), "max": kept.max().item()}


def preference_metrics(*, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
                       chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor,
                       chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       losses: torch.Tensor, ref_chosen_logps: torch.Tensor | None = None,
                       ref_rejected_logps: torch.Tensor | None = None,
                       logps: LogpsReduction = "sum") -> dict[str, float]:
    """All per-batch diagnostics from ``(B,)`` tensors (pairwise; for k responses pass best/worst).

    Example (hand-computed, B = 2): chosen_logps = [-2, -6], lengths [2, 3]; rejected_logps = [-3, -4],
    lengths [1, 4]; rewards chosen [1, 0], rejected [0, 1]; losses [0.5, 1.5]:
    loss = 1.0; rewards/chosen = 0.5, rewards/rejected = 0.5, rewards/margins = 0, accuracies = 0.5;
    logps_sum/chosen = -4, logps_sum/rejected = -3.5; lnorm/chosen = [-1, -2] (mean -1.5),
    lnorm/rejected = [-3, -1] (mean -2), lnorm/margin = [2, -1] (mean 0.5). ``logps/chosen`` /
    ``logps/rejected`` are -4 / -3.5 with ``logps="sum"`` and -1.5 / -2 with ``logps="token_mean"``
    (see the module docstring).
    """
    if logps not in ("sum", "token_mean"):
        raise ValueError(f"logps must be 'sum' or 'token_mean', got {logps!r}")
    f = torch.float64
    cl, rl = chosen_logps.detach().to(f), rejected_logps.detach().to(f)
    cr, rr = chosen_rewards.detach().to(f), rejected_rewards.detach().to(f)
    ln_c = cl / chosen_lengths.detach().to(f)
    ln_r = rl / rejected_lengths.detach().to(f)
    out = {
        "loss": losses.detach().to(f).mean().item(),
        "rewards/chosen": cr.mean().item(),
        "rewards/rejected": rr.mean().item(),
        "rewards/margins": (cr - rr).mean().item(),
        "rewards/accuracies": (cr > rr).to(f).mean().item(),
        "logps/chosen": (cl if logps == "sum" else ln_c).mean().item(),
        "logps/rejected": (rl if logps == "sum" else ln_r).mean().item(),
        "logps_sum/chosen": cl.mean().item(),
        "logps_sum/rejected": rl.mean().item(),
    }
    for name, vals in (("lnorm/chosen", ln_c), ("lnorm/rejected", ln_r), ("lnorm/margin", ln_c - ln_r)):
        for stat, value in robust_summary(vals).items():
            out[f"{name}/{stat}"] = value
    if ref_chosen_logps is not None and ref_rejected_logps is not None:
        d = torch.cat([cl - ref_chosen_logps.detach().to(f), rl - ref_rejected_logps.detach().to(f)])
        n_tokens = chosen_lengths.detach().to(f).sum() + rejected_lengths.detach().to(f).sum()
        out.update(kl_estimates(d, n_tokens.item()))
    return out


def kl_estimates(log_ratios: torch.Tensor, num_tokens: float) -> dict[str, float]:
    """k1 / per-token k1 estimates of KL(pi || pi_ref) from the per-response log-ratios ``d`` (N,) of an
    off-policy batch (no k3 here: see the module docstring).

    Example: d = [0, ln 2] -> k1 = ln(2)/2 = 0.34657; with 4 tokens, token_k1 = ln(2)/4 = 0.17329.
    """
    d = log_ratios.detach().double()
    return {"kl/seq_k1": d.mean().item(), "kl/token_k1": d.sum().item() / max(num_tokens, 1.0)}


def sampled_kl_estimates(log_ratios: torch.Tensor, num_tokens: float) -> dict[str, float]:
    """KL(pi || pi_ref) from ``d = log pi(y) - log pi_ref(y)`` (N,) of responses **sampled from pi**.

    - ``k1`` = ``mean(d)``: unbiased (``E_pi[log pi/pi_ref]`` is the KL by definition), any sign per sample;
    - ``k3`` = ``mean(r - 1 - log r)`` with ``r = exp(-d)``: Schulman's estimator ("Approximating KL
      divergence", 2020), unbiased because ``E_pi[r] = 1``, >= 0 per sample, lower variance when pi is
      close to pi_ref. Computed as ``expm1(-d) + d`` in float64: exact near ``d = 0`` (where
      ``exp(-d) - 1 + d`` cancels to 0 in float32) and finite up to ``-d = 709``; beyond that it is
      ``inf``, the honest value of a sample whose reference likelihood is that much larger;
    - ``token_k1`` = ``sum(d) / num_tokens``: the k1 estimate per sampled token.

    Example (hand-computed): d = [0, ln 2] -> k1 = ln(2)/2, k3 = mean(0, 1/2 - 1 + ln 2) = 0.09657;
    d = [-45, 45] -> k1 = 0, k3 = (expm1(45) - 45 + expm1(-45) + 45) / 2 = (e^45 - 2 + e^-45) / 2.
    """
    d = log_ratios.detach().double()
    if d.numel() == 0:
        raise ValueError("sampled_kl_estimates needs at least one sampled response")
    return {"k1": d.mean().item(), "k3": (torch.expm1(-d) + d).mean().item(),
            "token_k1": d.sum().item() / max(num_tokens, 1.0)}


def logps_reduction(*, length_normalized: bool, uses_reference: bool) -> LogpsReduction:
    """What ``logps/*`` means for a loss: ``"token_mean"`` for a length-normalised reference-free loss (TRL
    CPOTrainer's ``simpo`` / ``ipo`` / ``alphapo``), else ``"sum"`` (TRL DPOTrainer, every loss)."""
    return "token_mean" if length_normalized and not uses_reference else "sum"


def probe_metrics(*, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, chosen_lengths: torch.Tensor,
                  rejected_lengths: torch.Tensor) -> dict[str, float]:
    """``probe/*`` metrics of a fixed probe set from its ``(N,)`` summed log-probs and lengths.

    ``probe/chosen_lnorm`` = mean of ``logp(y_w) / |y_w|``, ``probe/rejected_lnorm`` = mean of
    ``logp(y_l) / |y_l|``, ``probe/margin_lnorm`` = mean of their per-pair difference; each also with
    ``/q1``, ``/median``, ``/q3``, ``/min``, ``/max`` (:func:`robust_summary`).

    Example (hand-computed, N = 3): chosen_logps = [-2, -6, -3], lengths [2, 3, 1]; rejected_logps =
    [-3, -4, -8], lengths [1, 4, 2] -> chosen_lnorm = [-1, -2, -3] (mean -2), rejected_lnorm =
    [-3, -1, -4] (mean -8/3), margin = [2, -1, 1] (mean 2/3; sorted [-1, 1, 2]: q1 = 0, median 1,
    q3 = 1.5).
    """
    f = torch.float64
    ln_c = chosen_logps.detach().to(f) / chosen_lengths.detach().to(f)
    ln_r = rejected_logps.detach().to(f) / rejected_lengths.detach().to(f)
    out: dict[str, float] = {}
    for key, vals in zip(PROBE_KEYS, (ln_c, ln_r, ln_c - ln_r)):
        summary = robust_summary(vals)
        out[key] = summary.pop("mean")
        out.update({f"{key}/{stat}": value for stat, value in summary.items()})
    return out


def all_finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


class MetricWindow:
    """Per-example stats accumulated between two log records."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.grad_norms: list[float] = []
        self.tokens = 0
        self.seconds = 0.0
        self.steps = 0
        self.lr = 0.0

    def add(self, stats: dict[str, torch.Tensor]):
        for k, v in stats.items():
            self.stats.setdefault(k, []).append(v)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) for k, v in self.stats.items()}


def window_metrics(stats: dict[str, torch.Tensor], *, logps: LogpsReduction = "sum") -> dict[str, float]:
    """:func:`preference_metrics` of the per-example stats a window (or an eval pass) collected."""
    out = preference_metrics(**{k: stats[k] for k in (
        "chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths", "chosen_rewards",
        "rejected_rewards", "losses")}, ref_chosen_logps=stats.get("ref_chosen_logps"),
        ref_rejected_logps=stats.get("ref_rejected_logps"), logps=logps)
    return {**out, **token_metrics(stats)}


def token_metrics(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """``logits/chosen`` / ``logits/rejected`` (TRL's: the mean logit over completion tokens and the
    vocabulary) and ``tokens/useful_fraction`` (each prompt once plus its responses, over the positions the
    forward ran: the waste of padding and repeated prompts), from the per-example sums the trainer keeps;
    absent keys give no metric.

    Example (hand-computed): chosen_logit_sums = [2, 4] over chosen_lengths [1, 3] -> logits/chosen =
    6 / 4 = 1.5; useful_tokens = [10, 6], processed_tokens = [12, 12] -> tokens/useful_fraction = 16/24.
    """
    f = torch.float64
    out: dict[str, float] = {}
    for side in ("chosen", "rejected"):
        if f"{side}_logit_sums" in stats:
            out[f"logits/{side}"] = (stats[f"{side}_logit_sums"].to(f).sum()
                                     / stats[f"{side}_lengths"].to(f).sum().clamp_min(1)).item()
    if "useful_tokens" in stats:
        out["tokens/useful_fraction"] = (stats["useful_tokens"].to(f).sum()
                                         / stats["processed_tokens"].to(f).sum().clamp_min(1)).item()
    return out
