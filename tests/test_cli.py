"""The course's single command line: every command is reachable and --help stays light."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import course_utils
from course_utils.__main__ import CLI_MODULES, build_parser
from course_utils.paths import project_root

HEAVY_LIBRARIES = ("torch", "transformers", "papermill", "lmdeploy", "xtuner", "matplotlib")


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m course_utils ARGS`` (or ``python -c CODE``) in a fresh interpreter at the project root."""
    command = ["-c", code] if code else ["-m", "course_utils", *args]
    return subprocess.run([sys.executable, *command], cwd=project_root(), capture_output=True, text=True)


def test_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("doctor", "run-notebook", "run-course", "make-tiny-model", "make-synthetic-foodieqa"):
        assert command in result.stdout


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys; from course_utils.__main__ import build_parser; build_parser(); "
        f"print(','.join(m for m in {HEAVY_LIBRARIES!r} if m in sys.modules))"
    )
    result = run_cli(code=code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_every_module_that_offers_commands_is_listed_in_cli_modules():
    offering = set()
    for info in pkgutil.iter_modules(course_utils.__path__):
        if info.name != "__main__" and hasattr(importlib.import_module(f"course_utils.{info.name}"), "register_cli"):
            offering.add(info.name)
    assert offering - set(CLI_MODULES) == set(), "add these to CLI_MODULES in course_utils/__main__.py"
    assert set(CLI_MODULES) <= offering


def test_every_subcommand_has_a_handler():
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    for name, subparser in subparsers.choices.items():
        assert callable(subparser.get_default("handler")), name


def test_an_unknown_command_fails_with_usage():
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
