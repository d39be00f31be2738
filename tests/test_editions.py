"""The Chinese edition runs exactly the English lessons' code: cell for cell, the same code cells (source, tags,
collapsed state, ids) and a prose cell wherever the English has one, written in Chinese."""

from __future__ import annotations

import copy
import json
import re

import pytest

from course_utils.course_run import list_notebooks
from course_utils.paths import notebook_dir

TRANSLATED = "zh-CN"
CJK = re.compile(r"[\u4e00-\u9fff]")


def load(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def differences(original: dict, translation: dict) -> list[str]:
    """Where ``translation`` is not a faithful edition of ``original``; empty when it is."""
    found = []
    if len(original["cells"]) != len(translation["cells"]):
        found.append(f"{len(translation['cells'])} cells, the original has {len(original['cells'])}")
    for index, (cell, other) in enumerate(zip(original["cells"], translation["cells"])):
        if (cell["cell_type"], cell.get("id")) != (other["cell_type"], other.get("id")):
            found.append(f"cell {index}: {other['cell_type']} {other.get('id')}, the original has "
                         f"{cell['cell_type']} {cell.get('id')}")
        elif cell["cell_type"] == "code":
            if "".join(cell["source"]) != "".join(other["source"]):
                found.append(f"cell {index}: its code differs from the original's")
            if cell.get("metadata", {}) != other.get("metadata", {}):
                found.append(f"cell {index}: its tags or collapsed state differ from the original's")
        elif "".join(cell["source"]).strip() and not CJK.search("".join(other["source"])):
            found.append(f"cell {index}: prose not translated")
    return found


def test_every_lesson_has_its_translation():
    assert [path.name for path in list_notebooks(TRANSLATED)] == [path.name for path in list_notebooks()]
    stray = [path.name for path in notebook_dir(TRANSLATED).glob("*.ipynb") if path not in list_notebooks(TRANSLATED)]
    assert not stray


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda path: path.stem)
def test_the_translation_runs_the_same_code(path):
    assert differences(load(path), load(notebook_dir(TRANSLATED) / path.name)) == []


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda path: path.stem)
def test_the_translation_runs_and_records_what_the_original_records(path, executed_notebook):
    lesson = path.name[:2]
    _, figures = executed_notebook(lesson, TRANSLATED)
    _, original = executed_notebook(lesson)
    assert set(figures) == set(original)
    if lesson == "03":  # the data and its split depend on nothing but the seed
        assert figures == original


def test_a_changed_code_cell_or_a_missing_prose_cell_is_caught():
    original = load(list_notebooks()[0])
    code = next(i for i, cell in enumerate(original["cells"]) if cell["cell_type"] == "code")
    prose = next(i for i, cell in enumerate(original["cells"]) if cell["cell_type"] == "markdown")
    edited = copy.deepcopy(original)
    edited["cells"][code]["source"].append("\nprint('one more line')")
    assert f"cell {code}: its code differs from the original's" in differences(original, edited)
    shortened = copy.deepcopy(original)
    del shortened["cells"][prose]
    assert f"{len(shortened['cells'])} cells, the original has {len(original['cells'])}" in differences(original, shortened)
    untranslated = copy.deepcopy(original)
    assert f"cell {prose}: prose not translated" in differences(original, untranslated)
    assert differences(original, load(notebook_dir(TRANSLATED) / list_notebooks()[0].name)) == []
