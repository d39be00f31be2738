"""The course's command line: ``python -m course_utils --help`` lists the subcommands.

Each module that offers commands defines ``register_cli(subparsers)`` and is listed in ``CLI_MODULES``
(tests/test_cli.py fails when one is missing); its handlers import heavy libraries lazily so that ``--help``
stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

CLI_MODULES = ("doctor", "tiny_model", "foodieqa", "course_run")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every module's subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils",
        description="The InternVL2 course's command line; `python -m course_utils COMMAND --help` explains a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in CLI_MODULES:
        module = importlib.import_module(f"course_utils.{name}")
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its handler's return value is the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
