"""The ``alphapo`` command line.

Each area of the package owns its sub-commands: a module listed in ``_COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` (called with the parsed namespace,
returning an exit code). Heavy imports (torch, transformers) happen inside those functions, so
``alphapo --help`` stays fast.

Run ``alphapo --help`` for the list.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from alphapo.errors import AlphapoError

# module -> its register() adds these top-level commands
_COMMAND_MODULES = (
    "alphapo.analysis.cli",  # analyze gradient|shapes|surface
    "alphapo.data.cli",  # data validate|stats|relabel|tokenize
    "alphapo.training.cli",  # train, plot-run
    "alphapo.toyworld.cli",  # toy sft|reward-model|...
    "alphapo.generation.cli",  # generate
    "alphapo.evaluation.cli",  # eval
    "alphapo.quickstart",  # quickstart
    "alphapo.demo",  # demo (losses + gradient analysis, no training)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphapo",
        description="Direct preference alignment: AlphaPO, RPO and reward-augmented data.",
    )
    from alphapo import __version__

    parser.add_argument("--version", action="version", version=f"alphapo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # an area not built yet must not break the others
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AlphapoError as err:
        print(f"alphapo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
