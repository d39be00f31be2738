"""Every lesson has a papermill test that asserts its recorded figures: a new notebook without one fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from course_utils.course_run import list_notebooks

TESTS = Path(__file__).resolve().parent


def lessons_executed_by_tests() -> dict[str, set[str]]:
    """Lesson numbers passed to the ``executed_notebook`` fixture, by test file, read from the tests' syntax trees."""
    found: dict[str, set[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "executed_notebook"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.setdefault(node.args[0].value[:2], set()).add(path.name)
    return found


def test_every_lesson_is_executed_and_its_figures_asserted():
    tested = lessons_executed_by_tests()
    lessons = {path.name[:2]: path.name for path in list_notebooks()}
    untested = sorted(name for number, name in lessons.items() if number not in tested)
    assert not untested, (
        f"lessons without a papermill test: {untested}; add tests/test_<topic>_notebook.py that calls "
        "executed_notebook('NN') and asserts the figures the lesson records"
    )


def test_the_tests_name_only_existing_lessons():
    lessons = {path.name[:2] for path in list_notebooks()}
    stale = sorted(number for number in lessons_executed_by_tests() if number not in lessons)
    assert not stale, f"tests execute lessons that do not exist: {stale}"
