"""What a learner sees of a lesson: the code it teaches, with the plumbing out of sight.

- every ``record(...)`` (the figures the tests read) sits in a code cell tagged ``record`` that holds nothing else,
  with its source and outputs collapsed (``jupyter.source_hidden`` / ``outputs_hidden``);
- no visible code cell is longer than one screen (30 lines);
- every exercise has a solution cell, tagged ``solution``, collapsed, that calls ``check(...)`` on its answer.
"""

from __future__ import annotations

import ast
import json

import pytest

from course_utils.course_run import find_notebook

# Lessons laid out this way; a lesson joins when it is rewritten.
LAID_OUT = ("00", "01", "02", "03", "04", "05", "06")
MAX_VISIBLE_LINES = 30


def cells_of(lesson: str) -> list[dict]:
    return json.loads(find_notebook(lesson).read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def collapsed(cell: dict) -> bool:
    jupyter = cell.get("metadata", {}).get("jupyter", {})
    return bool(jupyter.get("source_hidden"))


def is_record_statement(node: ast.stmt) -> bool:
    """``record(...)``, its import, or a loop of nothing else (``for name, value in figures.items(): record(...)``)."""
    if isinstance(node, ast.For):
        return all(map(is_record_statement, node.body))
    if isinstance(node, ast.ImportFrom):
        return node.module == "course_utils.records" and [alias.name for alias in node.names] == ["record"]
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "record")


def calls_record(cell: dict) -> bool:
    tree = ast.parse(source(cell).replace("%matplotlib inline", ""))
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "record"
               for node in ast.walk(tree))


@pytest.mark.parametrize("lesson", LAID_OUT)
def test_records_sit_in_collapsed_record_cells(lesson):
    for index, cell in enumerate(cells_of(lesson)):
        if cell["cell_type"] != "code":
            continue
        if "record" in tags(cell):
            statements = ast.parse(source(cell)).body
            assert statements and all(map(is_record_statement, statements)), f"cell {index}: only record(...) here"
            assert cell["metadata"]["jupyter"] == {"source_hidden": True, "outputs_hidden": True}, f"cell {index}"
        else:
            assert not calls_record(cell), f"cell {index} calls record(...): move it to the section's record cell"


@pytest.mark.parametrize("lesson", LAID_OUT)
def test_no_visible_code_cell_is_longer_than_a_screen(lesson):
    long = [(index, len(source(cell).splitlines())) for index, cell in enumerate(cells_of(lesson))
            if cell["cell_type"] == "code" and not collapsed(cell)
            and len(source(cell).splitlines()) > MAX_VISIBLE_LINES]
    assert not long, f"visible code cells over {MAX_VISIBLE_LINES} lines (index, lines): {long}"


@pytest.mark.parametrize("lesson", LAID_OUT)
def test_every_exercise_has_a_collapsed_solution_that_checks_itself(lesson):
    cells = cells_of(lesson)
    headings = [i for i, cell in enumerate(cells) if source(cell).startswith("## Exercises")]
    if lesson == "00":
        assert not headings, "lesson 00 checks the set-up and has no exercises"
        return
    start = headings[-1]
    tasks = [cell for cell in cells[start:] if cell["cell_type"] == "markdown" and source(cell).startswith("**")]
    solutions = [cell for cell in cells[start:] if "solution" in tags(cell)]
    assert len(solutions) == len(tasks), "one solution cell (tagged solution) per exercise"
    for cell in solutions:
        assert collapsed(cell), "collapse solution cells (metadata.jupyter.source_hidden)"
        assert "check(" in source(cell), "a solution ends by checking itself: check('LL.N', answer, ...)"
