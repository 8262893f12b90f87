"""``alphapo experiment-plot OUT``: the figures of a finished ``alphapo experiment`` as PNGs in ``OUT/plots/``.

What is drawn, from ``OUT/summary.json`` and the runs' ``OUT/runs/**/result.json`` and
``work/train/metrics.jsonl`` (every point is a mean over the configuration's seeds, with the Student-t
95% interval over seeds as error bars, ``alphapo.experiments.stats.mean_ci``):

- ``<metric>_vs_<key>.png`` (AlphaPO Figure 3): for every numeric parameter ``key`` that the recipe
  varies, the table's metrics against it. Configurations that differ only in ``key`` form one line (so the
  alpha sweep's ``alpha0`` row, alpha = 0, joins the ``alphapo`` rows); a parameter that changes nothing
  else's line into more than one point is not plotted. Metrics: ``--metric`` (repeatable), default
  ``test/win_rate``, ``test/correctness_gain`` and ``test/length`` where the table has them.
- ``probe_lnorm_vs_step.png`` (AlphaPO Figure 2, the displacement curve): per configuration, the mean
  over seeds of the probe set's ``probe/chosen_lnorm`` and ``probe/rejected_lnorm`` against the
  optimizer step (runs with ``probe_size``; steps as for the KL curves below).
- ``margin_quartiles.png`` (AlphaPO Figure 13): per configuration, the end-of-training probe margin's
  quartiles ``probe/margin_lnorm/q1``, ``/median``, ``/q3``, each a mean over seeds.
- ``kl_vs_step.png``, ``win_rate_vs_step.png`` and ``win_rate_vs_kl.png`` (AlphaPO Figures 10-11): from
  the toy job's ``eval_steps`` curves (``extra.eval_curve``): the sampled KL(pi || pi_SFT) (k1 and k3)
  and the validation win rate against the SFT policy, per configuration, against the step and the win
  rate against the KL. For these curves and the probe curves, the intermediate points are at the steps
  every seed evaluated; a run's last point (the end of training, whose step depends on the seed's
  number of pairs) is averaged over seeds at the mean last step.

Every series drawn is also written to ``OUT/plots/plots.json`` (the numbers behind each figure). A
figure whose data the experiment does not have is skipped, and the command lists what it wrote.
Deviation from the paper's figures: the x-axis of the KL and probe curves is the optimizer step, not the
epoch fraction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alphapo.errors import UserError
from alphapo.experiments.recipe import config_hash
from alphapo.experiments.stats import mean_ci
from alphapo.io import write_png_atomic, write_text_atomic

__all__ = ["load_experiment", "sweep_series", "swept_keys", "probe_curves", "margin_quartiles", "eval_curves",
           "plot_experiment", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("test/win_rate", "test/correctness_gain", "test/length")


# ------------------------------------------------------------------------------------------------ data
def load_experiment(out: str | Path) -> tuple[dict, dict[str, list[dict]]]:
    """``(summary, {config label: [result per seed, by seed]})`` of a finished experiment folder."""
    out = Path(out)
    path = out / "summary.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist: plots read a finished 'alphapo experiment' folder (rerun the "
                        "experiment to the end first; a sweep's folder has sweep.json instead)")
    summary = json.loads(path.read_text(encoding="utf-8"))
    # a run belongs to a row by the hash of its parameters (runs of an older version of the recipe that
    # are still in OUT/runs are not mixed in)
    wanted = {config_hash(summary["job"], row["params"]): row["config"] for row in summary["rows"]}
    by_config: dict[str, list[dict]] = {row["config"]: [] for row in summary["rows"]}
    for p in sorted((out / "runs").glob("**/result.json")):
        result = json.loads(p.read_text(encoding="utf-8"))
        config = wanted.get(result["spec"]["config_hash"])
        if config is not None and result["spec"]["seed"] in summary["seeds"]:
            result["_dir"] = str(p.parent)
            by_config[config].append(result)
    for row in summary["rows"]:
        runs = sorted(by_config[row["config"]], key=lambda r: r["spec"]["seed"])
        if [r["spec"]["seed"] for r in runs] != sorted(row["seeds"]):
            raise UserError(f"{out}/runs: configuration {row['config']!r} has results for seeds "
                            f"{[r['spec']['seed'] for r in runs]}, the table for {row['seeds']}; rerun the experiment")
        by_config[row["config"]] = runs
    return summary, by_config


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def swept_keys(rows: Sequence[dict]) -> list[str]:
    """Numeric parameters along which some line has at least two configurations (see :func:`sweep_series`)."""
    keys = sorted({k for row in rows for k in row["params"]})
    return [k for k in keys if any(len(s["x"]) >= 2 for s in _lines(rows, k))]


def _lines(rows: Sequence[dict], key: str) -> list[dict]:
    groups: dict[str, dict] = {}
    for row in rows:
        x = row["params"].get(key)
        if not _number(x):
            continue
        rest = json.dumps({k: v for k, v in row["params"].items() if k != key}, sort_keys=True)
        g = groups.setdefault(rest, {"methods": [], "x": [], "rows": []})
        if row["method"] not in g["methods"]:
            g["methods"].append(row["method"])
        g["x"].append(float(x))
        g["rows"].append(row)
    return list(groups.values())


def sweep_series(rows: Sequence[dict], key: str, metric: str) -> list[dict]:
    """One line per group of configurations that differ only in ``key``: ``label`` (its methods), ``x``
    (the ``key`` values, ascending), ``mean``, ``ci_low``, ``ci_high`` (of ``metric``, from the table)."""
    out = []
    for g in _lines(rows, key):
        if len(g["x"]) < 2:
            continue
        order = sorted(range(len(g["x"])), key=lambda i: g["x"][i])
        cells = [g["rows"][i]["metrics"][metric] for i in order]
        out.append({"label": " + ".join(g["methods"]), "x": [g["x"][i] for i in order],
                    "mean": [c["mean"] for c in cells], "ci_low": [c["ci_low"] for c in cells],
                    "ci_high": [c["ci_high"] for c in cells]})
    return out


def _over_seeds(per_seed: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Per position: mean and 95% interval over seeds."""
    stats = [mean_ci(vals) for vals in zip(*per_seed)]
    return {"mean": [s[0] for s in stats], "ci_low": [s[1] for s in stats], "ci_high": [s[2] for s in stats]}


def _probe_records(run_dir: str) -> list[dict]:
    path = Path(run_dir) / "work" / "train" / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in (json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip())
            if r.get("split") == "probe"]


def _common_steps(curves: Sequence[Sequence[dict]], keys: Sequence[str]) -> dict[str, Any]:
    """Per-seed curves (records with ``step``, by step) -> ``{"step", key: {mean, ci_low, ci_high}}``: the
    steps every seed has before its last record, then the last records at the mean last step."""
    middles = [{int(p["step"]): p for p in c[:-1]} for c in curves]
    steps = sorted(set.intersection(*(set(m) for m in middles)))
    points = [[m[t] for t in steps] + [c[-1]] for m, c in zip(middles, curves)]
    out: dict[str, Any] = {"step": [float(t) for t in steps] + [sum(c[-1]["step"] for c in curves) / len(curves)]}
    for k in keys:
        out[k] = _over_seeds([[p[k] for p in ps] for ps in points])
    return out


def probe_curves(by_config: dict[str, list[dict]]) -> dict[str, dict]:
    """``{config: {"step", "chosen": {mean, ci_low, ci_high}, "rejected": {...}}}`` from the runs' probe
    records (steps as in :func:`eval_curves`); configurations without probe records are left out."""
    out = {}
    for config, runs in by_config.items():
        per_seed = [sorted(_probe_records(run["_dir"]), key=lambda r: r["step"]) for run in runs]
        if not per_seed or not all(per_seed):
            continue
        c = _common_steps(per_seed, ("probe/chosen_lnorm", "probe/rejected_lnorm"))
        out[config] = {"step": c["step"], "chosen": c["probe/chosen_lnorm"], "rejected": c["probe/rejected_lnorm"]}
    return out


MARGIN_KEYS = ("probe/margin_lnorm/q1", "probe/margin_lnorm/median", "probe/margin_lnorm/q3")


def margin_quartiles(by_config: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """``{config: {"q1", "median", "q3"}}``: each the mean over seeds of the end-of-training probe margin's
    quartile; configurations without them are left out."""
    out = {}
    for config, runs in by_config.items():
        if runs and all(all(k in r["metrics"] for k in MARGIN_KEYS) for r in runs):
            out[config] = {k.rsplit("/", 1)[1]: sum(r["metrics"][k] for r in runs) / len(runs) for k in MARGIN_KEYS}
    return out


EVAL_KEYS = ("win_rate", "kl_k1", "kl_k3")


def eval_curves(by_config: dict[str, list[dict]]) -> dict[str, dict]:
    """``{config: {"step", "win_rate": {mean, ci_low, ci_high}, "kl_k1": ..., "kl_k3": ...}}`` from the runs'
    ``extra.eval_curve``: the steps every seed evaluated before its last point, then the last points
    averaged at the mean last step (module docstring)."""
    out = {}
    for config, runs in by_config.items():
        curves = [r.get("extra", {}).get("eval_curve") for r in runs]
        if not curves or not all(curves):
            continue
        out[config] = _common_steps(curves, EVAL_KEYS)
    return out


# ------------------------------------------------------------------------------------------------ figures
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _errorbar(ax, x, series: dict, label: str, **kw) -> None:
    """Mean with its 95% interval as error bars (no bar where the interval is NaN: one seed)."""
    mean = series["mean"]
    lo = [m - c if _number(c) else 0.0 for m, c in zip(mean, series["ci_low"])]
    hi = [c - m if _number(c) else 0.0 for m, c in zip(mean, series["ci_high"])]
    ax.errorbar(x, mean, yerr=[lo, hi], label=label, capsize=3, marker="o", markersize=3, **kw)


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * ncols, 4.0))
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def sweep_figure(series: list[dict], key: str, metric: str, title: str):
    fig, (ax,) = _figure()
    for s in series:
        _errorbar(ax, s["x"], s, s["label"])
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} (mean, 95% CI over seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def probe_figure(curves: dict[str, dict], title: str):
    fig, axes = _figure(2)
    for ax, side in zip(axes, ("chosen", "rejected")):
        for config, c in curves.items():
            _errorbar(ax, c["step"], c[side], config)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"probe {side}: mean log p(y)/|y|")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def margin_figure(quartiles: dict[str, dict[str, float]], title: str):
    fig, (ax,) = _figure()
    labels = list(quartiles)
    for i, config in enumerate(labels):
        q = quartiles[config]
        ax.vlines(i, q["q1"], q["q3"], linewidth=6, alpha=0.5)
        ax.plot([i], [q["median"]], marker="_", markersize=14, color="black")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=6)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel("end-of-training probe margin (q1, median, q3)")
    ax.set_title(title, fontsize=9)
    fig.subplots_adjust(bottom=0.3)
    return fig


def eval_figure(curves: dict[str, dict], keys: Sequence[str], title: str):
    fig, axes = _figure(len(keys))
    names = {"win_rate": "val win rate vs SFT", "kl_k1": "KL(pi || pi_SFT), k1", "kl_k3": "KL(pi || pi_SFT), k3"}
    for ax, k in zip(axes, keys):
        for config, c in curves.items():
            _errorbar(ax, c["step"], c[k], config)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(names[k])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def win_vs_kl_figure(curves: dict[str, dict], title: str):
    fig, (ax,) = _figure()
    for config, c in curves.items():
        ax.plot(c["kl_k1"]["mean"], c["win_rate"]["mean"], marker="o", markersize=3, label=config)
    ax.set_xlabel("KL(pi || pi_SFT), k1 (mean over seeds)")
    ax.set_ylabel("val win rate vs SFT (mean over seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return fig


def plot_experiment(out: str | Path, metrics: Sequence[str] | None = None) -> list[Path]:
    """Write every figure the experiment in ``out`` has data for into ``out/plots`` (module docstring);
    returns the files written (PNGs, then ``plots.json``)."""
    out = Path(out)
    summary, by_config = load_experiment(out)
    rows, name = summary["rows"], summary["name"]
    have = summary["metrics"]
    if metrics:
        missing = [m for m in metrics if m not in have]
        if missing:
            from alphapo.experiments.registry import nearest

            raise UserError(f"--metric {missing[0]!r} is not in {out}/summary.json's table"
                            f"{nearest(missing[0], have)}; it has {have}")
    else:
        metrics = [m for m in DEFAULT_METRICS if m in have]
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    written: list[Path] = []
    data: dict[str, Any] = {}

    def save(fig, filename: str, series: Any) -> None:
        written.append(write_png_atomic(fig, plots / filename, dpi=110))
        data[filename] = series

    for key in swept_keys(rows):
        for metric in metrics:
            series = sweep_series(rows, key, metric)
            save(sweep_figure(series, key, metric, f"{name}: {metric} vs {key}"),
                 f"{_slug(metric)}_vs_{_slug(key)}.png", series)
    probes = probe_curves(by_config)
    if probes:
        save(probe_figure(probes, f"{name}: probe-set likelihoods (displacement)"), "probe_lnorm_vs_step.png", probes)
    quartiles = margin_quartiles(by_config)
    if quartiles:
        save(margin_figure(quartiles, f"{name}: end-of-training probe margin"), "margin_quartiles.png", quartiles)
    curves = eval_curves(by_config)
    if curves:
        save(eval_figure(curves, ("kl_k1", "kl_k3"), f"{name}: KL to the SFT policy"), "kl_vs_step.png", curves)
        save(eval_figure(curves, ("win_rate",), f"{name}: win rate vs SFT"), "win_rate_vs_step.png", curves)
        save(win_vs_kl_figure(curves, f"{name}: win rate vs KL"), "win_rate_vs_kl.png", curves)
    if not written:
        raise UserError(f"{out}: nothing to plot (no swept numeric parameter, no probe records, no eval_steps "
                        "curves)")
    write_text_atomic(plots / "plots.json", json.dumps(_nan_to_none(data), indent=1))
    written.append(plots / "plots.json")
    return written


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
