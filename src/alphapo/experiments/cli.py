"""Command line: ``alphapo experiment RECIPE.yaml --out OUT``, ``alphapo sweep RECIPE.yaml --out OUT`` and
``alphapo experiment-plot OUT``.

Examples (the recipe format is in ``docs/experiments.md``)::

    alphapo experiment recipe.yaml --out runs/exp            # all runs, then OUT/results.{csv,md}
    alphapo experiment recipe.yaml --out runs/exp --jobs 2   # two runs at a time
    alphapo experiment recipe.yaml --out runs/exp            # again after an interruption: finished runs are kept
    alphapo sweep sweep.yaml --out runs/sweep                # grid / greedy / a6 search, OUT/sweep.{json,md}
    alphapo experiment-plot runs/exp                         # figures of a finished experiment, OUT/plots/
    alphapo experiment a.yaml --out runs/a --shared-dir runs/shared   # SFT / pairs computed once for
    alphapo experiment b.yaml --out runs/b --shared-dir runs/shared   # every recipe that needs them

Both commands are resumable: rerun the same command with the same ``--out``. ``register(subparsers)``
adds the three commands to the ``alphapo`` parser; ``main(argv)`` runs them standalone
(``python -m alphapo.experiments.cli experiment recipe.yaml --out runs/exp``).
"""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file (format: docs/experiments.md)")
    p.add_argument("--out", required=True, help="output folder; rerunning with the same folder resumes")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel runs (default: usable CPU cores // the recipe's threads, at least 1)")
    p.add_argument("--shared-dir", default=None,
                   help="folder of the shared stages (SFT policy, pair set, reference cache per seed; default "
                        "OUT/shared); give several recipes the same one to compute each stage once")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment", help="run a recipe: methods x hyper-parameters x seeds, in parallel, resumable; "
                           "tables with 95%% CIs",
        description="Expand the recipe into runs, run the unfinished ones in parallel processes, write "
                    "OUT/results.csv, OUT/results.md, OUT/comparisons.csv and OUT/summary.json.")
    _common(p)
    p.set_defaults(func=run_experiment_cmd)
    q = subparsers.add_parser(
        "sweep", help="hyper-parameter search (grid, greedy coordinate-wise, AlphaPO A.6): select on "
                      "validation, report test",
        description="Search each method's space with its strategy (grid, greedy or a6), selecting on the "
                    "recipe's sweep.select metric; reports the chosen setting's sweep.report metric. "
                    "Writes OUT/sweep.json and OUT/sweep.md.")
    _common(q)
    q.set_defaults(func=run_sweep_cmd)
    f = subparsers.add_parser(
        "experiment-plot", help="figures of a finished experiment: metrics vs a swept parameter with 95%% CIs, "
                                "probe displacement curves, margin quartiles, KL and win rate vs step",
        description="Read OUT/summary.json and the runs' results of a finished 'alphapo experiment' and write "
                    "PNGs and plots.json (the numbers drawn) to OUT/plots/ (alphapo.experiments.plots).")
    f.add_argument("out", help="the --out folder of a finished alphapo experiment")
    f.add_argument("--metric", action="append", default=None,
                   help="a table metric to plot against each swept parameter (repeatable; default "
                        "test/win_rate, test/correctness_gain, test/length where present)")
    f.set_defaults(func=plot_cmd)


def run_experiment_cmd(args: argparse.Namespace) -> int:
    from alphapo.experiments.runner import run_experiment

    summary = run_experiment(args.recipe, args.out, jobs=args.jobs, progress=not args.no_progress,
                             shared_dir=args.shared_dir)
    print(f"alphapo experiment: {summary['n_runs']} runs; tables in {args.out}/results.md and "
          f"{args.out}/results.csv")
    return 0


def plot_cmd(args: argparse.Namespace) -> int:
    from alphapo.experiments.plots import plot_experiment

    for path in plot_experiment(args.out, args.metric):
        print(path)
    return 0


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from alphapo.experiments.sweep import run_sweep

    summary = run_sweep(args.recipe, args.out, jobs=args.jobs, progress=not args.no_progress,
                        shared_dir=args.shared_dir)
    for name, m in summary["methods"].items():
        rep = m["report"]
        print(f"{name}: chosen {m['chosen_overrides']} ({summary['select']} {m['select_mean']:.4g}); "
              f"{summary['report']} {rep['mean']:.4g}")
    print(f"alphapo sweep: {summary['n_runs']} runs; report in {args.out}/sweep.md")
    return 0
