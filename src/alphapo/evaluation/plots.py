"""Figures for evaluation: the judge-score (reward) distributions of several models on the same prompts.

``plot_reward_histogram({"SFT": [...], "AlphaPO": [...]}, "rewards.png")`` draws overlaid step
histograms on shared bins, with each model's mean as a dashed line: the AlphaPO paper's Figure 3 (right),
"reward distributions for the SFT, SimPO and AlphaPO checkpoints" (PairRM scores on UltraFeedback test).
``plot_unlearning({"DPO": result, "DPO (RA)": result2}, "unlearning.png")`` draws the reward-augmented
paper's Figure 3: the expected log-probability of high-scoring rejected responses under the reference
and under each trained model (``UnlearningResult``s from ``alphapo.evaluation.logprobs``).

Written atomically (temporary file, then rename). Uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from alphapo.errors import UserError
from alphapo.io import atomic_path

__all__ = ["plot_reward_histogram", "histogram_bins", "unlearning_bars", "plot_unlearning"]


def histogram_bins(values: Sequence[float], *, bins: int = 30) -> np.ndarray:
    """Shared bin edges over all values: unit-width bins centred on integers when all values are integers
    (e.g. a 1..10 judge), else ``bins`` equal bins."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    if np.all(v == np.round(v)) and hi - lo <= 100:
        return np.arange(lo - 0.5, hi + 1.5)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_reward_histogram(scores: Mapping[str, Sequence[float]], path: str | Path, *,
                          title: str = "Judge score distribution", xlabel: str = "judge score",
                          bins: int = 30) -> Path:
    """Overlaid histograms (density) of each model's judge scores; returns the written path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    series = {name: np.asarray(v, dtype=np.float64) for name, v in scores.items() if len(v)}
    if not series:
        raise UserError("plot_reward_histogram: no scores to plot")
    edges = histogram_bins(np.concatenate(list(series.values())), bins=bins)
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, v) in enumerate(series.items()):
        c = colors[i % len(colors)]
        ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.8, color=c,
                label=f"{name} (mean {v.mean():.2f}, n={v.size})")
        ax.axvline(v.mean(), color=c, linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


def unlearning_bars(results: Mapping[str, object], *, reference_name: str = "reference",
                    per_token: bool = False) -> dict[str, float]:
    """Bar heights for ``plot_unlearning``: the reference's mean log-prob, then each model's.

    All results must share the reference value (same reference model and responses), else ``UserError``.
    """
    if not results:
        raise UserError("plot_unlearning: no results")
    field_m, field_r = (("mean_token_logp_model", "mean_token_logp_reference") if per_token
                        else ("mean_logp_model", "mean_logp_reference"))
    refs = {round(getattr(r, field_r), 6) for r in results.values()}
    if len(refs) != 1:
        raise UserError("plot_unlearning: the results have different reference log-probs; compare models "
                        "against the same reference on the same responses")
    bars = {reference_name: float(getattr(next(iter(results.values())), field_r))}
    bars.update({name: float(getattr(r, field_m)) for name, r in results.items()})
    return bars


def plot_unlearning(results: Mapping[str, object], path: str | Path, *, reference_name: str = "reference",
                    per_token: bool = False) -> Path:
    """Bar chart of mean log pi(y_rejected | x) over high-scoring rejected responses (paper Figure 3)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    bars = unlearning_bars(results, reference_name=reference_name, per_token=per_token)
    first = next(iter(results.values()))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + 1.2 * len(bars)), 4))
    ax.bar(list(bars), list(bars.values()), color=["0.6"] + ["C0"] * (len(bars) - 1))
    for i, v in enumerate(bars.values()):
        ax.annotate(f"{v:.2f}", (i, v), ha="center", va="top" if v < 0 else "bottom", fontsize=8)
    ax.set_ylabel("mean log-prob per token" if per_token else "mean log-prob (summed over tokens)")
    ax.set_title(f"High-scoring rejected responses\n(score >= {first.min_score:g}, n={first.n})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)
