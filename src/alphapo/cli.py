"""The ``alphapo`` command line.

Each area of the package owns its sub-commands: a module listed in ``_COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` (called with the parsed namespace,
returning an exit code). Heavy imports (torch, transformers) happen inside those functions, so
``alphapo --help`` stays fast. This top layer also registers the toy world's judge specs
(``toy-gold``, ``toy-proxy``) for ``generate`` and ``eval``.

Run ``alphapo --help`` for the list.
"""

from __future__ import annotations

import argparse
import sys

from alphapo import demo, quickstart
from alphapo.analysis import cli as analysis_cli
from alphapo.data import cli as data_cli
from alphapo.errors import AlphapoError
from alphapo.evaluation import cli as evaluation_cli
from alphapo.experiments import cli as experiments_cli
from alphapo.generation import cli as generation_cli
from alphapo.toyworld import cli as toyworld_cli
from alphapo.toyworld import register_judges
from alphapo.training import cli as training_cli

# module -> its register() adds these top-level commands
_COMMAND_MODULES = (
    analysis_cli,  # analyze gradient|shapes|surface
    data_cli,  # data validate|stats|convert|tokenize|relabel|unrelabel
    training_cli,  # train, plot-run
    toyworld_cli,  # toy sft|reward-model|...
    generation_cli,  # generate
    evaluation_cli,  # eval
    quickstart,  # quickstart
    experiments_cli,  # experiment, sweep
    demo,  # demo (losses + gradient analysis, no training)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphapo",
        description="Direct preference alignment: AlphaPO, RPO and reward-augmented data.",
    )
    from alphapo import __version__

    parser.add_argument("--version", action="version", version=f"alphapo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(sub)
    register_judges()  # --judge toy-gold / toy-proxy:... in generate and eval
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
