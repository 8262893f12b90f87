"""The named pairwise losses: one entry per loss of docs/papers.md and of TRL 1.16's trainers.

Most are ``compose``d (reference x normalisation x shape x link; see ``alphapo.losses.compose``), so
every one of them is also available with any other reward shape. The rest use the chosen and rejected
rewards separately (not only their difference) or couple the batch, and are written out as plain
functions with explicit keyword-only signatures: ``nca_pair``, ``bco_pair``, ``sppo_hard``, ``aot``,
``aot_unpaired``, ``apo_zero``, ``apo_down``, ``sft``.

Notation (see ``docs/papers.md`` for the full index): ``h_w = logp(w) - logp_ref(w)``,
``h_l = logp(l) - logp_ref(l)``, ``h = h_w - h_l``, ``s = logp / |y|``. All inputs are ``(B,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from alphapo.losses.compose import compose
from alphapo.losses.contract import (
    POSITIVE,
    LossOutput,
    check_inputs,
    lengths_or_error,
    loss_contract,
    ranges,
    registry,
)
from alphapo.losses.numerics import compute_dtype

Tensor = torch.Tensor
logsig = F.logsigmoid

# --------------------------------------------------------------------------------------------------------
# Composed losses (reference-model family, DPO-style summed log-ratios)
# --------------------------------------------------------------------------------------------------------

dpo = compose(shape="log", link="sigmoid", normalize="sum", reference="ratio", name="dpo", doc="""\
DPO: ``-logsig(beta * h - gamma)`` (Rafailov et al. 2023, eq. 7); ``gamma`` defaults to 0.

Inputs (B,): chosen/rejected logps and ref logps (summed over completion tokens). Rewards ``beta*h_w``,
``beta*h_l``. TRL: DPOTrainer ``loss_type="sigmoid"``. Deviations: none (``gamma`` is an extra margin,
0 by default).""")

cdpo = compose(shape="log", link="smoothed_sigmoid", normalize="sum", reference="ratio", name="cdpo",
               doc="""\
Conservative DPO: ``-(1-eps) logsig(z) - eps logsig(-z)``, ``z = beta*h - gamma`` (Mitchell 2023 note;
DPO paper's label smoothing). ``eps`` = label-flip probability (reward-augmented paper uses 0.3 for some
models). Any shape: ``compose(shape=..., link="smoothed_sigmoid")``. TRL 1.16: none (its "sigmoid"
ignores ``label_smoothing``). Deviations: none.""", defaults={"eps": 0.1})

robust = compose(shape="log", link="robust", normalize="sum", reference="ratio", name="robust", doc="""\
Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", arXiv:2403.00409):
``(-(1-eps) logsig(beta h) + eps logsig(-beta h)) / (1-2eps)``.

``eps`` in [0, 0.5) is the assumed label-flip rate. TRL: DPOTrainer ``loss_type="robust"`` with
``label_smoothing=eps``. Deviations: none.""", defaults={"eps": 0.1})

hinge = compose(shape="log", link="hinge", normalize="sum", reference="ratio", name="hinge", doc="""\
SLiC / RSO hinge: ``max(0, 1 - beta*h)`` (Zhao et al. 2023, SLiC-HF; Liu et al. 2024, RSO, arXiv:2309.06657).

TRL: DPOTrainer ``loss_type="hinge"``. Deviations: none.""")

ipo = compose(shape="log", link="squared", normalize="mean", reference="ratio", name="ipo", doc="""\
IPO: ``(h' - 1/(2 beta))^2`` with ``h' = h_w/|w| - h_l/|l|`` (Azar et al. 2023, eq. 17, tau = beta).

Needs lengths. TRL: DPOTrainer ``loss_type="ipo"``. Deviations: the per-token normalisation of the
log-ratios is TRL's (confirmed by the IPO authors, not written in the paper); rewards logged are
``beta*h_w/|w|`` (TRL logs the unnormalised ``beta*h_w``).""")

exo_pair = compose(shape="log", link="exo", normalize="sum", reference="ratio", name="exo_pair", doc="""\
EXO-pref with two responses (Ji et al. 2024, eq. 16): ``KL(Bern(sigma(beta h)) || Bern(1 - eps))``.

``eps`` must be in (0, 1) (EXO recommends 1e-3). TRL: DPOTrainer ``loss_type="exo_pair"`` with
``label_smoothing=eps``. Deviations: none.""", defaults={"eps": 1e-3})

discopop = compose(shape="log", link="discopop", normalize="sum", reference="ratio", name="discopop",
                   doc="""\
DiscoPOP (Chris Lu et al. 2024, eq. 5): log-ratio modulated mix of the logistic and exponential losses,
``(1 - sigma(z/tau)) (-logsig z) + sigma(z/tau) exp(-z)`` with ``z = beta*h``.

TRL: DPOTrainer ``loss_type="discopop"`` (``tau`` = ``discopop_tau``, default 0.05). Deviations: the
exponential term is evaluated as ``exp(-z + logsig(z/tau))`` (capped), so it stays finite where TRL's
``exp(-z) * sigmoid(z/tau)`` is ``inf * 0 = nan`` (``z < -88`` in float32).""", defaults={"tau": 0.05})

sigmoid_norm = compose(shape="log", link="sigmoid", normalize="mean", reference="ratio", name="sigmoid_norm",
                       doc="""\
Length-normalised DPO: ``-logsig(beta * (h_w/|w| - h_l/|l|) - gamma)`` (= ``simpo_ref`` with gamma = 0).

TRL: DPOTrainer ``loss_type="sigmoid_norm"``. Deviations: none (``gamma`` extra, default 0).""")

fdpo_alpha = compose(shape="alpha", link="sigmoid", normalize="sum", reference="ratio", name="fdpo_alpha",
                     defaults={"alpha": 0.5}, doc="""\
f-DPO with the alpha-divergence (Wang et al. 2024, "Beyond Reverse KL", arXiv:2309.16240):
``-logsig(beta (f'(u_w) - f'(u_l)))``, ``f'(u) = (1 - u^-alpha)/alpha``, ``u = pi/pi_ref`` (not
length-normalised).

That is exactly the alpha reward shape on summed log-ratios, so it shares AlphaPO's overflow-safe
numerics; ``alpha = 0`` is DPO, ``alpha = 1`` forward KL. TRL: DPOTrainer ``loss_type="sigmoid"`` with
``f_divergence_type="alpha_divergence"`` and ``f_alpha_divergence_coef = 1 - alpha``. Deviations: TRL
clamps the exponent at 80 (float32) and returns float32 garbage beyond; we continue it linearly above
``MAX_EXPONENT = 60``.""")

# --------------------------------------------------------------------------------------------------------
# Reference-free / length-normalised family (SimPO, AlphaPO)
# --------------------------------------------------------------------------------------------------------

_SIMPO_DEFAULTS = {"beta": 2.5, "gamma": 0.25}  # AlphaPO Table 3, Mistral-Instruct: beta 2.5, gamma/beta 0.1

simpo = compose(shape="log", link="sigmoid", normalize="mean", reference="none", name="simpo",
                defaults=_SIMPO_DEFAULTS, doc="""\
SimPO: ``-logsig(beta*s(w) - beta*s(l) - gamma)`` (Meng et al. 2024, arXiv:2405.14734; AlphaPO eq. 2).

``gamma`` is the absolute margin (SimPO's repo reports gamma/beta). Defaults: AlphaPO Table 3,
Mistral-Instruct (beta 2.5, gamma 0.25). TRL: CPOTrainer ``loss_type="simpo"`` with ``cpo_alpha=0``
(our ``cpo_simpo`` keeps TRL's NLL term). Deviations: none.""")

simpo_ref = compose(shape="log", link="sigmoid", normalize="mean", reference="ratio", name="simpo_ref",
                    defaults=_SIMPO_DEFAULTS, doc="""\
SimPO with a reference model (AlphaPO appendix A.4): ``u = (logp - logp_ref)/|y|`` in the log shape.

TRL: DPOTrainer ``loss_type="sigmoid_norm"`` is this loss at gamma = 0. Deviations: none.""")

_ALPHAPO_DEFAULTS = {"beta": 2.5, "gamma": 0.25, "alpha": 0.25}  # AlphaPO Table 3, Mistral-Instruct

alphapo = compose(shape="alpha", link="sigmoid", normalize="mean", reference="none", name="alphapo",
                  defaults=_ALPHAPO_DEFAULTS, doc="""\
AlphaPO: ``-logsig(r_a(w) - r_a(l) - gamma)``, ``r_a(y) = (beta/alpha)(1 - pibar(y)^-alpha)`` with
``pibar = exp(s)`` (Gupta et al. 2025, eqs. 3-4).

``alpha = 0`` is SimPO exactly (bit-identical); ``alpha = -1`` linear, ``+1`` inverse-linear reward.
Defaults: AlphaPO Table 3, Mistral-Instruct (alpha 0.25, beta 2.5, gamma 0.25). TRL: CPOTrainer
``loss_type="alphapo"`` (its ``alpha``). Deviations: reward gap computed as
``beta (s_w - s_l) phi(-|alpha (s_w - s_l)|) exp(max(-alpha s_w, -alpha s_l))`` (same value; TRL's
``exp(s)**-alpha`` overflows for ``alpha*|s| > 88`` in float32); exponents above 60 continued linearly.""")

alphapo_ref = compose(shape="alpha", link="sigmoid", normalize="mean", reference="ratio", name="alphapo_ref",
                      defaults=_ALPHAPO_DEFAULTS, doc="""\
AlphaPO with a reference model (AlphaPO appendix A.4): the alpha shape on ``u = (logp - logp_ref)/|y|``.

TRL: none. Deviations: as ``alphapo``.""")

# --------------------------------------------------------------------------------------------------------
# CPO family (reference-free, with the NLL term; TRL experimental CPOTrainer)
# --------------------------------------------------------------------------------------------------------

_CPO_NOTE = """\
``nll_weight`` is CPO's lambda (TRL ``cpo_alpha``); ``chosen_nll`` (per-example mean token NLL of the
chosen completion) defaults to ``-chosen_logps / chosen_lengths``. Deviations: TRL averages the NLL over
all chosen tokens of the batch (token-weighted); ours is per example, the same when lengths are equal
(pass ``chosen_nll`` to reproduce TRL's weighting)."""

cpo = compose(shape="log", link="smoothed_sigmoid", normalize="sum", reference="none", name="cpo",
              nll_weight=1.0, defaults={"eps": 0.0}, doc=f"""\
CPO: ``-(1-eps) logsig(beta (logp_w - logp_l)) - eps logsig(-...) + nll_weight * NLL(w)``
(Xu et al. 2024, eq. 3 + NLL term; eps = 0 is the paper).

TRL: CPOTrainer ``loss_type="sigmoid"`` (``label_smoothing=eps``, ``cpo_alpha=nll_weight``).
{_CPO_NOTE}""")

cpo_hinge = compose(shape="log", link="hinge", normalize="sum", reference="none", name="cpo_hinge",
                    nll_weight=1.0, doc=f"""\
CPO with the hinge link: ``max(0, 1 - beta (logp_w - logp_l)) + nll_weight * NLL(w)``.

TRL: CPOTrainer ``loss_type="hinge"``. {_CPO_NOTE}""")

cpo_ipo = compose(shape="log", link="squared", normalize="mean", reference="none", name="cpo_ipo",
                  nll_weight=1.0, doc=f"""\
CPO with the IPO link: ``(s_w - s_l - 1/(2 beta))^2 + nll_weight * NLL(w)`` (average log-probs, as TRL).

TRL: CPOTrainer ``loss_type="ipo"``. {_CPO_NOTE}""")

cpo_simpo = compose(shape="log", link="smoothed_sigmoid", normalize="mean", reference="none",
                    name="cpo_simpo", nll_weight=1.0, defaults={**_SIMPO_DEFAULTS, "eps": 0.0}, doc=f"""\
CPO-SimPO: SimPO (with label smoothing ``eps``) plus ``nll_weight * NLL(w)``.

TRL: CPOTrainer ``loss_type="simpo"`` (``simpo_gamma`` = our absolute ``gamma``; TRL computes
``beta * (logits - simpo_gamma/beta)``, i.e. the same absolute margin). {_CPO_NOTE}""")

# --------------------------------------------------------------------------------------------------------
# RPO distances (pairwise): match the implicit reward gap to the judge's gap
# --------------------------------------------------------------------------------------------------------

_RPO_DOC = """\
RPO ({dist}) ("Reward-aware Preference Optimization", NVIDIA 2025; formulas from NeMo-Aligner):
``D(d_pi, d_r)`` with ``d_pi = beta*h - gamma`` (DPO's implicit reward gap; any shape via
``compose(link="{name}")``) and ``d_r = eta * (R(w) - R(l))`` from ``chosen_scores`` / ``rejected_scores``.
{formula} TRL: none. Deviations: none."""

rpo_bwd = compose(shape="log", link="rpo_bwd", normalize="sum", reference="ratio", name="rpo_bwd",
                  doc=_RPO_DOC.format(dist="backward KL", name="rpo_bwd", formula=(
                      "``D = KL(Bern(sigma(d_r)) || Bern(sigma(d_pi)))``; sigma(d_r) -> 1 gives DPO, "
                      "sigma(d_r) = 1 - eps gives cDPO plus the constant -H(eps).")))
rpo_fwd = compose(shape="log", link="rpo_fwd", normalize="sum", reference="ratio", name="rpo_fwd",
                  doc=_RPO_DOC.format(dist="forward KL", name="rpo_fwd",
                                      formula="``D = KL(Bern(sigma(d_pi)) || Bern(sigma(d_r)))``."))
rpo_sqr = compose(shape="log", link="rpo_sqr", normalize="sum", reference="ratio", name="rpo_sqr",
                  doc=_RPO_DOC.format(dist="squared", name="rpo_sqr", formula="``D = (d_pi - d_r)^2``."))


# --------------------------------------------------------------------------------------------------------
# Losses that use the chosen and rejected rewards separately, or couple the batch
# --------------------------------------------------------------------------------------------------------


def _prepare(name: str, requires: frozenset[str], args: dict[str, Any]) -> dict[str, Any]:
    """Check required inputs and shapes, then cast every tensor to the compute dtype (>= float32)."""
    check_inputs(name, requires, args, "chosen_logps")
    dtype = compute_dtype(*(v for v in args.values() if torch.is_tensor(v)))
    return {k: v.to(dtype) if torch.is_tensor(v) else v for k, v in args.items()}


_REF = {"ref_chosen_logps", "ref_rejected_logps"}
_BETA = ranges(beta=POSITIVE)
_BETA_EPS = ranges(beta=POSITIVE, eps="[0, 0.5)")  # eps: label smoothing, as the smoothed_sigmoid link


@loss_contract(requires=_REF, ranges=_BETA)
def nca_pair(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
             rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
             ref_rejected_logps: Tensor | None = None, beta: float = 0.1) -> LossOutput:
    """NCA, pairwise (Chen et al. 2024, "Noise Contrastive Alignment", arXiv:2402.05369; K = 2 as in TRL).

    ``-logsig(r_w) - logsig(-r_w)/2 - logsig(-r_l)/2`` with ``r = beta * h`` per response. Unlike DPO it
    anchors each reward to 0, so it cannot lower the chosen likelihood indefinitely. TRL: DPOTrainer
    ``loss_type="nca_pair"``. Deviations: none.
    """
    a = _prepare("nca_pair", nca_pair.requires, dict(locals()))
    r_w = beta * (a["chosen_logps"] - a["ref_chosen_logps"])
    r_l = beta * (a["rejected_logps"] - a["ref_rejected_logps"])
    losses = -logsig(r_w) - 0.5 * logsig(-r_w) - 0.5 * logsig(-r_l)
    return LossOutput(losses, r_w.detach(), r_l.detach())


@loss_contract(requires=_REF, ranges=_BETA)
def bco_pair(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
             rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
             ref_rejected_logps: Tensor | None = None, beta: float = 0.1,
             delta: float | Tensor = 0.0) -> LossOutput:
    """BCO on pairs, with its reward shift (Jung et al. 2024, "Binary Classifier Optimization", 2404.04656).

    ``-logsig(r_w - delta) - logsig(-(r_l - delta))``, ``r = beta * h``. ``delta`` is BCO's reward shift:
    the running mean of all rewards seen so far. It is *state*, so it is an explicit input here: keep a
    ``RunningMean`` in the training loop, pass ``delta=running.mean`` and update it with the returned
    rewards (``running = running.update(torch.cat([out.chosen_rewards, out.rejected_rewards]))``).
    TRL: DPOTrainer ``loss_type="bco_pair"`` is ``delta = 0`` (TRL 1.16 dropped the running mean).
    Deviations: none at ``delta = 0``.
    """
    a = _prepare("bco_pair", bco_pair.requires, dict(locals()))
    r_w = beta * (a["chosen_logps"] - a["ref_chosen_logps"])
    r_l = beta * (a["rejected_logps"] - a["ref_rejected_logps"])
    losses = -logsig(r_w - a["delta"]) - logsig(-(r_l - a["delta"]))
    return LossOutput(losses, r_w.detach(), r_l.detach())


@dataclass(frozen=True)
class RunningMean:
    """Immutable running mean of rewards for ``bco_pair``'s ``delta`` (exact mean of everything seen).

    ``RunningMean().update(x)`` returns a new object; ``mean`` is a float. Multi-process training should
    update it with the gathered rewards so every rank uses the same ``delta``.
    """

    count: int = 0
    mean: float = 0.0

    def update(self, values: Tensor) -> RunningMean:
        n = int(values.numel())
        if n == 0:
            return self
        batch_mean = float(values.detach().double().mean())
        total = self.count + n
        return RunningMean(total, self.mean + (batch_mean - self.mean) * n / total)


@loss_contract(requires=_REF, ranges=_BETA)
def sppo_hard(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
              rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
              ref_rejected_logps: Tensor | None = None, beta: float = 0.1) -> LossOutput:
    """SPPO with hard labels (Wu et al. 2024, eq. 4.7 with P = 1 for the winner, 0 for the loser).

    ``(h_w - 1/(2 beta))^2 + (h_l + 1/(2 beta))^2`` on the (unscaled, summed) log-ratios. TRL: DPOTrainer
    ``loss_type="sppo_hard"``. Deviations: none (the paper's soft probabilities are computed outside).
    """
    a = _prepare("sppo_hard", sppo_hard.requires, dict(locals()))
    h_w = a["chosen_logps"] - a["ref_chosen_logps"]
    h_l = a["rejected_logps"] - a["ref_rejected_logps"]
    losses = (h_w - 0.5 / beta) ** 2 + (h_l + 0.5 / beta) ** 2
    return LossOutput(losses, (beta * h_w).detach(), (beta * h_l).detach())


def _smoothed(z: Tensor, eps: float) -> Tensor:
    return -(1.0 - eps) * logsig(z) - eps * logsig(-z)


@loss_contract(requires=_REF, ranges=_BETA_EPS)
def aot(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
        rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
        ref_rejected_logps: Tensor | None = None, beta: float = 0.1, eps: float = 0.0) -> LossOutput:
    """AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment via OT", arXiv:2406.05882).

    Sorts ``logp_w - logp_l`` and ``logp_ref_w - logp_ref_l`` over the batch separately and applies the
    smoothed BT loss to the sorted differences: ``-(1-eps) logsig(beta d_i) - eps logsig(-beta d_i)``.
    Batch-coupled: ``losses[i]`` belongs to the i-th quantile, not to example i, and the value depends on
    the batch composition (micro-batching changes it). TRL: DPOTrainer ``loss_type="aot"``
    (``label_smoothing=eps``). Deviations: none.
    """
    a = _prepare("aot", aot.requires, dict(locals()))
    logratios, _ = torch.sort(a["chosen_logps"] - a["rejected_logps"], dim=0)
    ref_logratios, _ = torch.sort(a["ref_chosen_logps"] - a["ref_rejected_logps"], dim=0)
    losses = _smoothed(beta * (logratios - ref_logratios), eps)
    h_w = a["chosen_logps"] - a["ref_chosen_logps"]
    h_l = a["rejected_logps"] - a["ref_rejected_logps"]
    return LossOutput(losses, (beta * h_w).detach(), (beta * h_l).detach())


@loss_contract(requires=_REF, ranges=_BETA_EPS)
def aot_unpaired(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
                 rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
                 ref_rejected_logps: Tensor | None = None, beta: float = 0.1, eps: float = 0.0) -> LossOutput:
    """AOT, unpaired (Melnyk et al. 2024): sorted chosen log-ratios minus sorted rejected log-ratios.

    ``-(1-eps) logsig(beta d_i) - eps logsig(-beta d_i)``, ``d = sort(h_w) - sort(h_l)``. Batch-coupled
    like ``aot``. TRL: DPOTrainer ``loss_type="aot_unpaired"``. Deviations: none.
    """
    a = _prepare("aot_unpaired", aot_unpaired.requires, dict(locals()))
    h_w = a["chosen_logps"] - a["ref_chosen_logps"]
    h_l = a["rejected_logps"] - a["ref_rejected_logps"]
    d = torch.sort(h_w, dim=0)[0] - torch.sort(h_l, dim=0)[0]
    return LossOutput(_smoothed(beta * d, eps), (beta * h_w).detach(), (beta * h_l).detach())


@loss_contract(requires=_REF, ranges=_BETA)
def apo_zero(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
             rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
             ref_rejected_logps: Tensor | None = None, beta: float = 0.1) -> LossOutput:
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", eq. 7).

    ``(1 - sigma(beta h_w)) + sigma(beta h_l)``: push the chosen likelihood up and the rejected down,
    for when the chosen outputs are better than the model's. TRL: DPOTrainer ``loss_type="apo_zero"``.
    Deviations: none.
    """
    a = _prepare("apo_zero", apo_zero.requires, dict(locals()))
    r_w = beta * (a["chosen_logps"] - a["ref_chosen_logps"])
    r_l = beta * (a["rejected_logps"] - a["ref_rejected_logps"])
    losses = (1.0 - torch.sigmoid(r_w)) + torch.sigmoid(r_l)
    return LossOutput(losses, r_w.detach(), r_l.detach())


@loss_contract(requires=_REF, ranges=_BETA)
def apo_down(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
             rejected_lengths: Tensor | None = None, ref_chosen_logps: Tensor | None = None,
             ref_rejected_logps: Tensor | None = None, beta: float = 0.1) -> LossOutput:
    """APO-down (D'Oosterlinck et al. 2024, eq. 8): ``sigma(beta h_w) + 1 - sigma(beta (h_w - h_l))``.

    Lowers both likelihoods, the rejected more; for when the chosen outputs are worse than the model's.
    TRL: DPOTrainer ``loss_type="apo_down"``. Deviations: none.
    """
    a = _prepare("apo_down", apo_down.requires, dict(locals()))
    r_w = beta * (a["chosen_logps"] - a["ref_chosen_logps"])
    r_l = beta * (a["rejected_logps"] - a["ref_rejected_logps"])
    losses = torch.sigmoid(r_w) + (1.0 - torch.sigmoid(r_w - r_l))
    return LossOutput(losses, r_w.detach(), r_l.detach())


@loss_contract()
def sft(*, chosen_logps: Tensor, rejected_logps: Tensor, chosen_lengths: Tensor | None = None,
        rejected_lengths: Tensor | None = None, chosen_nll: Tensor | None = None) -> LossOutput:
    """Supervised fine-tuning on the chosen completions: the mean token NLL of each chosen completion.

    ``chosen_nll`` if given, else ``-chosen_logps / chosen_lengths``. Rewards logged: the average
    log-probs ``logp/|y|`` (no beta, no reference). TRL: DPOTrainer ``loss_type="sft"``. Deviations: TRL
    averages over all chosen tokens of the batch (token-weighted) and repeats that scalar per example;
    ours is per example (equal batch means when lengths are equal).
    """
    a = _prepare("sft", sft.requires, dict(locals()))
    dtype = a["chosen_logps"].dtype
    lw = lengths_or_error("sft", a["chosen_lengths"], "chosen_lengths", dtype)
    ll = lengths_or_error("sft", a["rejected_lengths"], "rejected_lengths", dtype)
    losses = a["chosen_nll"] if a["chosen_nll"] is not None else -a["chosen_logps"] / lw
    return LossOutput(losses, (a["chosen_logps"] / lw).detach(), (a["rejected_logps"] / ll).detach())


PAIRWISE_LOSSES: dict[str, Callable[..., LossOutput]] = registry(
    dpo, cdpo, robust, hinge, ipo, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero,
    apo_down, discopop, sft, sigmoid_norm, fdpo_alpha, simpo, simpo_ref, alphapo, alphapo_ref, cpo, cpo_hinge,
    cpo_ipo, cpo_simpo, rpo_bwd, rpo_fwd, rpo_sqr,
)
"""Every pairwise loss by name (contract: keyword tensors of shape (B,))."""
