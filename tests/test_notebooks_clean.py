"""Lessons are committed clean: no outputs, no execution counts, a papermill parameters cell, the python3 kernel."""

from __future__ import annotations

import json

import pytest

from course_utils.course_run import list_notebooks, notebook_dir

NOTEBOOKS = list_notebooks()


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(notebook):
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_the_lessons_are_found():
    assert NOTEBOOKS, f"no lesson notebooks (NN_name.ipynb) in {notebook_dir()}"


def test_every_notebook_in_the_folder_is_a_numbered_lesson():
    stray = sorted(path.name for path in notebook_dir().glob("*.ipynb") if path not in NOTEBOOKS)
    assert not stray, f"name lessons NN_topic.ipynb so that make course runs them: {stray}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_lesson_is_committed_without_outputs(path):
    dirty = [
        index for index, cell in enumerate(code_cells(load(path))) if cell.get("outputs") or cell.get("execution_count")
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} carry outputs or execution counts; "
        f"clear them (JupyterLab: Edit > Clear Outputs of All Cells; or `jupyter nbconvert --clear-output --inplace {path.name}`)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_lesson_has_a_parameters_cell(path):
    tagged = [cell for cell in code_cells(load(path)) if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: tag exactly one code cell 'parameters' (papermill injects values after it)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_lesson_uses_the_python3_kernel(path):
    kernelspec = load(path)["metadata"].get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec must be python3, the course env's kernel"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_lesson_is_a_valid_notebook(path):
    import nbformat

    nbformat.validate(nbformat.read(path, as_version=4))
