"""The ``blastscope`` command line: demo, run, batch, train, evaluate, models.

Each command lives in a function ``_cmd_<name>(args) -> int``; training subcommands are registered
by their modules through ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from blastscope import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="blastscope",
        description="Blast detection and AML mutation prediction on stained smears.",
    )
    parser.add_argument("--version", action="version", version=f"blastscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train the models that blastscope ships")
    trainers = train.add_subparsers(dest="trainer", required=True, metavar="MODEL")
    for name, module_name, help_text in _TRAINERS:
        module = __import__(module_name, fromlist=["add_arguments", "run"])
        sub = trainers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


# (subcommand, module with add_arguments/run, help)
_TRAINERS: list[tuple[str, str, str]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``blastscope`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
