"""``alphapo plot-run OUT``: a run's diagnostics as PNG curves, in the style of AlphaPO's Figure 2.

AlphaPO Figure 2 tracks, over one epoch, statistics of the length-normalised preferred likelihood,
dispreferred likelihood and margin (mean, quartiles, min/max after outlier removal). We draw the same
from ``OUT/metrics.jsonl``: one panel per quantity, x = epoch, a solid mean line, a dotted median, a
shaded band between the first and third quartiles and thin dashed min/max lines (Tukey-trimmed, see
``metrics.py``). Files written to ``OUT/plots/`` (or ``--out``):

- ``lnorm_train.png``, ``lnorm_eval.png`` (when the run evaluated): the Figure 2 panels;
- ``lnorm_probe.png`` (when the run had a probe set, ``diagnostics.probe_size``): the same panels for the
  fixed probe set (``probe/*`` records, from step 0), the displacement curve of Figure 2;
- ``training.png``: loss, reward margins and accuracies, summed logps, KL estimates, grad norm,
  learning rate and tokens/s, train and eval overlaid.

With several runs (``alphapo plot-run OUT_a OUT_b ... --out DIR``), e.g. one per alpha as in the paper,
``compare_lnorm.png`` puts them side by side the way Figure 2 does: a grid with one column per quantity
(preferred, dispreferred, margin), one row per statistic (mean, q1, median, q3, min, max) and one line
per run, labelled from the run's ``config.yaml`` (loss name and its hyper-parameters); when every run had
a probe set, ``compare_lnorm_probe.png`` does the same for the probe curves. Each run's own
PNGs then go to ``DIR/<run folder name>/`` (without ``--out``: each run's ``plots/``, and the comparison
into the first run's). PNGs are written with ``alphapo.io.write_png_atomic``.
"""

from __future__ import annotations

import json
from pathlib import Path

from alphapo.errors import UserError
from alphapo.io import write_png_atomic

_QUANTITIES = (("chosen", "preferred  (1/|y_w|) log pi_w"), ("rejected", "dispreferred  (1/|y_l|) log pi_l"),
               ("margin", "margin"))
_PANELS = (("loss", "loss"), ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"),
           ("logps_sum/chosen", "logps chosen (sum)"), ("logps_sum/rejected", "logps rejected (sum)"),
           ("kl/seq_k1", "KL(pi||ref) k1 per response"), ("grad_norm", "grad norm"),
           ("learning_rate", "learning rate"), ("tokens_per_second", "tokens / s"))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path} does not exist: pass the output_dir of a training run")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: invalid JSON ({err})") from None
    if not records:
        raise UserError(f"{path} has no records yet")
    return records


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in records if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def lnorm_key(prefix: str, name: str, stat: str) -> str:
    """The metric holding ``stat`` of quantity ``name`` (chosen / rejected / margin): ``lnorm/chosen/q1``,
    ``eval/lnorm/chosen/q1``; for the probe set (``prefix="probe/"``) ``probe/chosen_lnorm/q1``, and the
    bare ``probe/chosen_lnorm`` for the mean."""
    if prefix == "probe/":
        return f"probe/{name}_lnorm" if stat == "mean" else f"probe/{name}_lnorm/{stat}"
    return f"{prefix}lnorm/{name}/{stat}"


def _lnorm_figure(records: list[dict], prefix: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (name, label) in zip(axes, _QUANTITIES):
        x, mean = _series(records, lnorm_key(prefix, name, "mean"))
        _, q1 = _series(records, lnorm_key(prefix, name, "q1"))
        _, med = _series(records, lnorm_key(prefix, name, "median"))
        _, q3 = _series(records, lnorm_key(prefix, name, "q3"))
        _, lo = _series(records, lnorm_key(prefix, name, "min"))
        _, hi = _series(records, lnorm_key(prefix, name, "max"))
        if x:
            ax.fill_between(x, q1, q3, alpha=0.25, color="C0", label="q1-q3")
            ax.plot(x, mean, color="C0", lw=1.8, label="mean")
            ax.plot(x, med, color="C0", lw=1.0, ls=":", label="median")
            ax.plot(x, lo, color="C3", lw=0.8, ls="--", label="min (outliers removed)")
            ax.plot(x, hi, color="C2", lw=0.8, ls="--", label="max (outliers removed)")
        if name == "margin":
            ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    write_png_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path


def _training_figure(train: list[dict], evals: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(14, 10))
    for ax, (key, label) in zip(axes.flat, _PANELS):
        x, y = _series(train, key)
        if x:
            ax.plot(x, y, color="C0", lw=1.4, label="train")
        ex, ey = _series(evals, f"eval/{key}")
        if ex:
            ax.plot(ex, ey, color="C1", lw=1.4, marker="o", ms=3, label="eval")
        if not x and not ex:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    write_png_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def run_label(run_dir: str | Path) -> str:
    """``"alphapo alpha=0.25 beta=2.5 gamma=0.25"`` from the run's config.yaml, else the folder name."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        loss = (yaml.safe_load(path.read_text()) or {}).get("loss", {})
    except (OSError, yaml.YAMLError):
        return Path(run_dir).resolve().name
    params = " ".join(f"{k}={v}" for k, v in sorted(loss.items()) if k != "name")
    return f"{loss.get('name', '?')} {params}".strip()


def plot_compare(run_dirs: list[str | Path], out_dir: str | Path, split: str = "train") -> Path:
    """Figure-2-style grid comparing several runs (see the module docstring); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = {"train": "", "eval": "eval/", "probe": "probe/"}[split]
    stats = ("mean", "q1", "median", "q3", "min", "max")
    fig, axes = plt.subplots(len(stats), 3, figsize=(15, 2.6 * len(stats)), sharex=True)
    for n, run in enumerate(run_dirs):
        records = [r for r in read_metrics(run) if r.get("split") == split]
        for col, (name, label) in enumerate(_QUANTITIES):
            for row, stat in enumerate(stats):
                x, y = _series(records, lnorm_key(prefix, name, stat))
                ax = axes[row, col]
                ax.plot(x, y, color=f"C{n}", lw=1.3, label=run_label(run) if row == col == 0 else None)
                if row == 0:
                    ax.set_title(label)
                if col == 0:
                    ax.set_ylabel(stat + (" (no outliers)" if stat in ("min", "max") else ""))
                ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.legend(loc="upper center", ncol=min(len(run_dirs), 4), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"compare_lnorm{'' if split == 'train' else '_' + split}.png"
    write_png_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the PNGs for the run in ``run_dir``; returns their paths."""
    records = read_metrics(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    probes = [r for r in records if r.get("split") == "probe"]
    name = Path(run_dir).resolve().name
    paths = []
    if train:
        paths.append(_lnorm_figure(train, "", f"{name}: length-normalised log-likelihoods (train batches)",
                                   out / "lnorm_train.png"))
    if evals:
        paths.append(_lnorm_figure(evals, "eval/", f"{name}: length-normalised log-likelihoods (eval split)",
                                   out / "lnorm_eval.png"))
    if probes:
        size = probes[-1].get("probe/size", "?")
        paths.append(_lnorm_figure(probes, "probe/", f"{name}: length-normalised log-likelihoods (fixed probe "
                                   f"set of {size} pairs)", out / "lnorm_probe.png"))
    paths.append(_training_figure(train, evals, out / "training.png"))
    return paths


def plot_runs(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """``alphapo plot-run``: each run's PNGs, plus the comparison when there are several runs (see the
    module docstring for where they go); returns the paths written."""
    runs = list(dict.fromkeys(Path(r).resolve() for r in run_dirs))  # the same run twice: plotted once
    if len(runs) == 1 and len(run_dirs) == 1:
        return plot_run(run_dirs[0], out_dir=out_dir)
    by_name: dict[str, Path] = {}
    for run in runs:
        if by_name.setdefault(run.name, run) != run:
            raise UserError(f"runs {str(by_name[run.name])!r} and {str(run)!r} have the same folder name "
                            f"{run.name!r}: their plots would overwrite each other in --out; rename one")
    paths = []
    for run in runs:
        paths += plot_run(run, out_dir=Path(out_dir) / run.name if out_dir else None)
    paths.append(plot_compare(runs, out_dir if out_dir else runs[0] / "plots"))
    if all(any(r.get("split") == "probe" for r in read_metrics(run)) for run in runs):
        paths.append(plot_compare(runs, out_dir if out_dir else runs[0] / "plots", split="probe"))
    return paths
