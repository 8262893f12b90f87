"""``alphapo demo``: a few-second, no-training demonstration of the loss family and the AlphaPO analysis.

    alphapo demo [--out runs/demo]

It prints

1. every loss in ``alphapo.losses.LOSSES`` evaluated on one fixed batch of 4 preference pairs (the same
   numbers for all losses; each loss gets the inputs its signature asks for and its default
   hyper-parameters): mean loss, mean reward margin ``r(w) - r(l)`` and reward accuracy;
2. AlphaPO across ``alpha`` on that batch (``alpha = 0`` reproduces SimPO exactly);
3. the paper's gradient-analysis table (T1, T2, |dl/dv|, section 3.3) for both illustrations, with
   ``alpha_0`` of Corollary 3.3;

and writes the paper's Figure 1 (``shapes.png``) and Figure 6 (``surface.png``) into ``--out``.
Multi-response losses (``multi_response = True``) get a ``(B, k)`` batch built from the same pairs plus a
middle response. Nothing is downloaded and nothing is trained.
"""

from __future__ import annotations

import inspect
from pathlib import Path

# One fixed batch of 4 pairs: summed log-probs, completion lengths, reference log-probs, judge scores.
DEMO_BATCH = {
    "chosen_logps": [-12.0, -30.0, -8.0, -45.0],
    "rejected_logps": [-15.0, -28.0, -20.0, -50.0],
    "chosen_lengths": [6, 10, 4, 15],
    "rejected_lengths": [5, 12, 8, 10],
    "ref_chosen_logps": [-13.0, -29.0, -9.0, -44.0],
    "ref_rejected_logps": [-14.0, -29.5, -18.0, -49.0],
    "chosen_scores": [0.9, 0.6, 0.8, 0.7],
    "rejected_scores": [0.2, 0.5, 0.1, 0.4],
}
DEMO_ALPHAS = (-1.0, -0.5, 0.0, 0.25, 1.0, 2.0)


def demo_batch() -> dict:
    """``DEMO_BATCH`` as float64 ``(B,)`` tensors, plus ``chosen_nll`` = mean token NLL of the chosen."""
    import torch

    batch = {k: torch.tensor(v, dtype=torch.float64) for k, v in DEMO_BATCH.items()}
    batch["chosen_nll"] = -batch["chosen_logps"] / batch["chosen_lengths"]
    return batch


def _multi_batch(batch: dict) -> dict:
    """``(B, 3)`` tensors: chosen, a middle response (average of the two), rejected."""
    import torch

    def three(a, b):
        return torch.stack([batch[a], (batch[a] + batch[b]) / 2, batch[b]], dim=1)

    return {
        "logps": three("chosen_logps", "rejected_logps"),
        "lengths": three("chosen_lengths", "rejected_lengths").round(),
        "ref_logps": three("ref_chosen_logps", "ref_rejected_logps"),
        "scores": three("chosen_scores", "rejected_scores"),
    }


def loss_rows(batch: dict | None = None) -> list[tuple[str, float | None, float | None, float | None, str]]:
    """``(name, mean loss, mean margin, accuracy, note)`` for every loss in ``LOSSES`` on the demo batch.

    Inputs are matched to each loss by ``inspect.signature``; hyper-parameters keep their defaults. A loss
    that needs an input the demo does not have is listed with ``None`` values and a note (never dropped).
    """
    from alphapo.losses import LOSSES

    batch = demo_batch() if batch is None else batch
    multi = _multi_batch(batch)
    rows = []
    for name, fn in sorted(LOSSES.items()):
        pool = multi if getattr(fn, "multi_response", False) else batch
        params = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in pool.items() if k in params}
        missing = [
            p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in kwargs
        ]
        if missing:
            rows.append((name, None, None, None, f"skipped: needs {', '.join(missing)}"))
            continue
        out = fn(**kwargs)
        margin = out.chosen_rewards - out.rejected_rewards
        note = "k=3 responses" if pool is multi else ""
        rows.append(
            (name, out.losses.mean().item(), margin.mean().item(), (margin > 0).double().mean().item(), note)
        )
    return rows


def alphapo_sweep(alphas=DEMO_ALPHAS, *, beta: float = 2.5, gamma: float = 0.25) -> list[tuple[float, float]]:
    """Mean AlphaPO loss on the demo batch for each alpha; also returns SimPO's for comparison at alpha=0."""
    from alphapo.losses import get_loss

    b = demo_batch()
    pair = {k: b[k] for k in ("chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths")}
    rows = [
        (a, get_loss("alphapo")(**pair, beta=beta, gamma=gamma, alpha=a).losses.mean().item()) for a in alphas
    ]
    simpo = get_loss("simpo")(**pair, beta=beta, gamma=gamma).losses.mean().item()
    return rows + [(float("nan"), simpo)]


def _fmt(x: float | None) -> str:
    return f"{'-':>12}" if x is None else f"{x:>12.6g}"


def run_demo(out_dir) -> int:
    from alphapo.analysis import ILLUSTRATION_ALPHAS, ILLUSTRATIONS
    from alphapo.analysis.cli import format_alpha_zero, format_gradient_table
    from alphapo.analysis.figures import plot_shapes, plot_surface

    print("== 1. Every loss on one fixed batch of 4 pairs (default hyper-parameters; means over the batch)")
    print("   " + ", ".join(f"{k}={v}" for k, v in DEMO_BATCH.items()))
    print(f"{'name':<18}{'loss':>12}{'margin':>12}{'accuracy':>12}  note")
    for name, loss, margin, acc, note in loss_rows():
        print(f"{name:<18}{_fmt(loss)}{_fmt(margin)}{_fmt(acc)}  {note}")

    print("\n== 2. AlphaPO across alpha on the same batch (beta=2.5, gamma=0.25); alpha=0 is SimPO")
    print(f"{'alpha':>8}{'loss':>14}")
    *sweep, (_, simpo) = alphapo_sweep()
    for alpha, loss in sweep:
        print(f"{alpha:>8g}{loss:>14.8g}")
    print(f"{'simpo':>8}{simpo:>14.8g}")

    print("\n== 3. AlphaPO gradient analysis (paper section 3.3): |dl/dv| = T1 * T2")
    for title, setting in ILLUSTRATIONS.items():
        print(f"-- {title}: " + ", ".join(f"{k}={v:g}" for k, v in setting.items()))
        print(format_gradient_table(ILLUSTRATION_ALPHAS, **setting))
        print(format_alpha_zero(**setting))

    out_dir = Path(out_dir)
    shapes = plot_shapes(out_dir / "shapes.png")
    surface = plot_surface(out_dir / "surface.png")
    print(
        f"\n== 4. Figures: {shapes} (paper Figure 1, reward shapes), {surface} (paper Figure 6, |dl/dv| over "
        "alpha and |y|)"
    )
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a few-second demonstration: losses and the AlphaPO gradient analysis",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default="runs/demo", help="folder for the two figures (default: runs/demo)")
    parser.set_defaults(func=lambda args: run_demo(args.out))
