"""Every lesson ends with an "Exercises" section of 2-4 tasks, each with a setup cell that runs."""

import json

import pytest

LESSONS_WITH_EXERCISES = ("01", "02", "03", "04", "05", "06")
SETUP_TAG = "exercise-setup"


def is_setup(cell) -> bool:
    return cell["cell_type"] == "code" and SETUP_TAG in cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("lesson", LESSONS_WITH_EXERCISES)
def test_exercises_close_the_lesson_and_their_setup_cells_run(executed_notebook, lesson):
    path, _ = executed_notebook(lesson)
    cells = json.loads(path.read_text())["cells"]
    headings = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## ")]
    assert "".join(cells[headings[-1]]["source"]).startswith("## Exercises"), "Exercises must be the last section"
    section = cells[headings[-1] + 1:]
    tasks = [c for c in section if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("**")]
    setups = [c for c in section if is_setup(c)]
    assert 2 <= len(tasks) <= 4
    assert len(setups) == len(tasks), "one setup cell (tagged exercise-setup) per exercise"
    for cell in setups:
        assert cell["execution_count"] is not None
        assert not [o for o in cell["outputs"] if o.get("output_type") == "error"]
        assert [o for o in cell["outputs"] if o.get("output_type") == "stream"], "a setup cell shows its starting point"
