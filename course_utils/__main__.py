"""The course's command line: ``python -m course_utils --help`` lists the subcommands.

Each module that offers commands defines ``register_cli(subparsers)`` and is listed in ``CLI_MODULES``
(tests/test_cli.py fails when one is missing); its handlers import heavy libraries lazily so that ``--help``
stays instant, and check their arguments before any work or any folder is created.

A learner's mistake is one line, ``error: <what is wrong and the fix>``, with exit status 1; a traceback is
shown only with ``--debug`` or for a real bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CourseError

CLI_MODULES = ("doctor", "tiny_model", "pretraining", "foodieqa", "course_run", "site")
# What the course's own checks raise: the message is the whole story, a traceback would only bury it.
LEARNER_ERRORS = (CourseError, ValueError, FileNotFoundError, PermissionError)
INTERRUPTED_STATUS = 130  # what a shell reports for Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every module's subcommands; ``--debug`` works before or after the command."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils",
        description="The InternVL2 course's command line; `python -m course_utils COMMAND --help` explains a command.",
    )
    debug_help = "show the full traceback of an error"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in CLI_MODULES:
        module = importlib.import_module(f"course_utils.{name}")
        module.register_cli(subparsers)
    for subparser in subparsers.choices.values():  # SUPPRESS: an absent flag leaves the top-level value alone
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its handler's return value is the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except LEARNER_ERRORS as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted; outputs in progress were discarded, earlier ones are unchanged", file=sys.stderr)
        return INTERRUPTED_STATUS


if __name__ == "__main__":
    sys.exit(main())
