"""Command line: ``alphapo train CONFIG.yaml [key=value ...]`` and ``alphapo plot-run OUT``.

Examples::

    alphapo train src/alphapo/configs/tiny_cpu.yaml output_dir=runs/a1 loss.alpha=0.5
    alphapo train run.yaml resume=true               # continue from OUT/checkpoints/latest
    alphapo train --print-config run.yaml loss.beta=2 # show the resolved config, train nothing
    alphapo train run.yaml loss.name=dpo loss.beta=0.1 # another loss; the file's loss settings are dropped
    alphapo plot-run runs/a1                          # PNGs of the diagnostics into runs/a1/plots/
    alphapo plot-run runs/a* --out runs/compare       # + a Figure-2-style comparison of the runs

Multi-GPU / multi-process: ``accelerate launch -m alphapo.cli train run.yaml``.

Every config error (unknown key, value outside its documented range, missing model folder, unwritable
``output_dir``) is one line on stderr and exit code 2, before torch, the model or the data are loaded.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a causal LM with a preference loss (YAML config + key=value overrides)",
        description="Train with any loss in alphapo.losses. Keys: model.*, data.*, loss.name and the "
                    "loss's hyper-parameters (loss.beta=...), reference.*, train.*, logging.*, output_dir, "
                    "resume. Unknown keys are errors with a suggestion.")
    p.add_argument("config", nargs="?", help="YAML config file (optional: all keys can be overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. loss.beta=2.5")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_train)

    q = subparsers.add_parser("plot-run", help="draw a run's diagnostics (metrics.jsonl) as PNG curves",
                              description="Figure-2-style curves (AlphaPO section 3.3) of a training run.")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run's output_dir (holds metrics.jsonl); several runs are also compared")
    q.add_argument("--out", default=None, help="folder for the PNGs (default RUN_DIR/plots); with several "
                                               "runs, the comparison goes here and each run's PNGs into "
                                               "OUT/<run folder name>/ (default: each RUN_DIR/plots, and "
                                               "the comparison into the first one's)")
    q.set_defaults(func=run_plot)


def _note(message: str) -> None:
    print(f"alphapo train: {message}", file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    from alphapo.training.config import load_config, resolve_config, to_dict, validate

    config_path = args.config
    overrides = list(args.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        overrides.insert(0, config_path)  # no YAML file given, only overrides
        config_path = None
    config = load_config(config_path, overrides, log=_note)
    if args.print_config:
        import yaml

        resolve_config(config)  # unknown loss keys and out-of-range values are errors here too
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    validate(config)  # every config error, as one line, before torch, the model or the data load
    from alphapo.training.trainer import train

    result = train(config)
    from accelerate.state import PartialState

    if PartialState().is_main_process:  # under `accelerate launch` every rank returns here: say it once
        print(f"alphapo train: {result.global_step} steps; final model in {result.final_dir}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from alphapo.training.plotting import plot_runs

    paths = plot_runs(args.run_dirs, args.out)
    for path in paths:
        print(path)
    return 0
