"""The lesson runner behind `make course`: smoke mode, the summary, and a failing lesson failing the run."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from course_utils import course_run
from course_utils.course_run import (
    LessonRun,
    describe_error,
    find_notebook,
    format_figure,
    format_summary,
    kernel_environment,
    lesson_parameters,
    run_course,
)
from course_utils.outputs import MARKER_FILE
from course_utils.paths import project_root
from course_utils.records import RECORD_MIME


def write_lesson(folder, name, parameters_source, *sources):
    """A small lesson notebook: a tagged parameters cell, then code cells."""
    parameters = new_code_cell(parameters_source, metadata={"tags": ["parameters"]})
    notebook = new_notebook(cells=[parameters, *map(new_code_cell, sources)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return path


def test_smoke_is_injected_only_into_lessons_that_declare_it(tmp_path):
    declares = write_lesson(tmp_path, "10_declares", "smoke = False\nsteps = 100")
    silent = write_lesson(tmp_path, "11_silent", "steps = 100")
    assert lesson_parameters(declares, None, smoke=True) == {"smoke": True}
    assert lesson_parameters(declares, {"smoke": False, "steps": 3}, smoke=True) == {"smoke": False, "steps": 3}
    assert lesson_parameters(declares, None, smoke=False) == {}
    assert lesson_parameters(silent, {"steps": 3}, smoke=True) == {"steps": 3}


def test_the_kernel_finds_this_checkout_first(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/opt/extra", str(project_root())]))
    env = kernel_environment({"RUN_DIR": "/tmp/run"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(project_root()), "/opt/extra"]
    assert env["RUN_DIR"] == "/tmp/run"


def test_lessons_are_found_by_number_or_name():
    assert find_notebook("00").name == "00_setup_check.ipynb"
    assert find_notebook("00_setup_check") == find_notebook("00_setup_check.ipynb")
    with pytest.raises(FileNotFoundError, match="00_setup_check"):
        find_notebook("99")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.123456, "0.1235"), (True, "True"), (None, "None"), (7, "7"), ("lmdeploy (GPU)", "lmdeploy (GPU)"),
     (["锅包肉", 2], '["锅包肉", 2]'), ({"a": 1.5}, '{"a": 1.5}')],
)
def test_figures_are_shown_on_one_short_line(value, shown):
    assert format_figure(value) == shown


def test_long_figures_are_cut():
    assert format_figure("x" * 500, width=20) == "x" * 17 + "..."


def test_the_summary_lists_each_lesson_its_result_time_and_figures(tmp_path):
    runs = [
        LessonRun("00_setup_check", 4.25, {"torch_version": "2.8.0+cu128", "cuda_available": False}),
        LessonRun("01_architecture", 1.0, {}, error="ValueError: bad tile"),
    ]
    lines = format_summary(runs, tmp_path).splitlines()
    assert lines[0] == f"Lessons executed into {tmp_path}"
    assert lines[2].split() == ["00_setup_check", "ok", "4.2", "s"]
    assert "      torch_version = 2.8.0+cu128" in lines
    assert "      cuda_available = False" in lines
    assert lines[5].split() == ["01_architecture", "FAILED", "1.0", "s"]
    assert "      error: ValueError: bad tile" in lines
    assert lines[-1] == "1 of 2 lessons ran; 5.2 s in all"


def test_the_summary_ends_with_lesson_05s_before_and_after_as_the_headline(tmp_path):
    heldout = {"before": 0.1875, "after": 0.90625, "ci95_after": [0.8, 0.96], "questions": 128, "mcnemar_p": 3.1e-20}
    runs = [LessonRun("04_lora_finetuning", 9.0, {"steps": 60}),
            LessonRun("05_evaluation", 30.0, {"heldout_original": heldout})]
    assert format_summary(runs, tmp_path).splitlines()[-1] == (
        "Headline: held-out accuracy 18.8% before fine-tuning -> 90.6% after (95 % CI 80.0%-96.0%, 128 questions, "
        "McNemar p = 3.1e-20)")


def test_a_cell_error_is_named_in_one_line():
    from papermill.exceptions import PapermillExecutionError

    error = PapermillExecutionError(3, 4, "raise ValueError", "ValueError", "bad tile\nmore", ["tb"])
    assert describe_error(error) == "ValueError: bad tile"
    assert describe_error(FileNotFoundError("no kernel named python3")) == "FileNotFoundError: no kernel named python3"


@pytest.mark.notebook
def test_run_course_runs_every_lesson_then_fails_on_the_failing_one(tmp_path, monkeypatch, capsys):
    lessons = tmp_path / "notebooks"
    lessons.mkdir()
    write_lesson(
        lessons, "00_fine", "smoke = False",
        "from course_utils.records import record\nrecord('smoke', smoke)\nrecord('accuracy', 0.625)",
    )
    write_lesson(lessons, "01_broken", "smoke = False", "raise ValueError('tile size must be 448')")
    monkeypatch.setattr(course_run, "notebook_dir", lambda edition="en": lessons)
    monkeypatch.setattr(course_run, "build_embedded_defaults", lambda: ["tiny InternVL2 model: (stub)"])
    out = tmp_path / "executed"

    assert run_course(out, editions=("en",)) == 1

    captured = capsys.readouterr()
    assert "00_fine" in captured.out and "accuracy = 0.625" in captured.out and "smoke = True" in captured.out
    assert "error: ValueError: tile size must be 448" in captured.out
    assert "1 of 2 lessons ran" in captured.out
    assert "1 lesson(s) failed: en/01_broken" in captured.err
    assert sorted(path.name for path in out.iterdir()) == [MARKER_FILE, "00_fine.ipynb", "01_broken.ipynb"]


def test_a_lesson_that_fails_before_running_shows_no_stale_figures(tmp_path, monkeypatch):
    (tmp_path / "lessons").mkdir()
    lesson = write_lesson(tmp_path / "lessons", "05_evaluate", "smoke = False")
    out = course_run.course_folder(tmp_path / "executed", course_run.EXECUTED_KIND)
    record = nbformat.v4.new_output("display_data", data={RECORD_MIME: {"name": "accuracy", "value": 1.0}})
    nbformat.write(new_notebook(cells=[new_code_cell("", outputs=[record])]), out / lesson.name)

    def no_kernel(*args, **kwargs):
        raise RuntimeError("No such kernel named python3")

    monkeypatch.setattr(course_run, "execute_notebook", no_kernel)
    run = course_run.run_lesson(lesson, out)
    assert (run.ok, run.figures, run.error) == (False, {}, "RuntimeError: No such kernel named python3")


def test_an_interrupted_run_keeps_the_earlier_executed_copy_and_leaves_no_partial(tmp_path, monkeypatch):
    import papermill

    (tmp_path / "lessons").mkdir()
    lesson = write_lesson(tmp_path / "lessons", "05_evaluate", "smoke = False")
    out = course_run.course_folder(tmp_path / "executed", course_run.EXECUTED_KIND)
    (out / lesson.name).write_text("earlier run")

    def interrupted(source, output, **kwargs):
        with open(output, "w") as partial:
            partial.write("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        course_run.execute_notebook(lesson, out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, lesson.name]
    assert (out / lesson.name).read_text() == "earlier run"


@pytest.mark.parametrize("where", ["foreign", "notebooks"])
def test_executed_lessons_never_go_into_a_foreign_folder_or_the_lessons_folder(tmp_path, monkeypatch, where):
    from course_utils.outputs import OutputRefused

    lesson = write_lesson(tmp_path, "05_evaluate", "smoke = False")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: pytest.fail("executed"))
    with pytest.raises(OutputRefused):
        course_run.execute_notebook(lesson, out if where == "foreign" else tmp_path)
    assert (out / "notes.txt").read_text() == "keep" and not (tmp_path / MARKER_FILE).exists()


def test_run_course_into_the_lessons_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from course_utils.__main__ import main

    lessons = tmp_path / "notebooks"
    lessons.mkdir()
    lesson = write_lesson(lessons, "00_fine", "smoke = False")
    monkeypatch.setattr(course_run, "notebook_dir", lambda edition="en": lessons)
    monkeypatch.setattr(course_run, "build_embedded_defaults", lambda: pytest.fail("built before checking --out"))
    assert main(["run-course", "--edition", "en", "--out", str(lessons)]) == 1
    assert "never writes into its own input" in capsys.readouterr().err
    assert sorted(p.name for p in lessons.iterdir()) == [lesson.name]
