"""Where the course reads and writes, and which model and data a lesson uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_utils import paths, tiny_model
from course_utils.tiny_model import ensure_tiny_model, resolve_model_path


def test_resolve_model_path_prefers_argument_then_environment_then_tiny(session_run_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MODEL_PATH", raising=False)
    assert resolve_model_path() == str(ensure_tiny_model())
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    assert resolve_model_path() == str(tmp_path.resolve())
    downloads = []
    monkeypatch.setattr(tiny_model, "download_model", lambda repo_id: downloads.append(repo_id) or tmp_path / "dl")
    assert resolve_model_path("OpenGVLab/InternVL2-1B") == str(tmp_path / "dl")  # tests/test_model_download.py
    assert resolve_model_path("download") == str(tmp_path / "dl")
    assert downloads == ["OpenGVLab/InternVL2-1B", "OpenGVLab/InternVL2-2B"]
    with pytest.raises(FileNotFoundError, match="MODEL_PATH"):
        resolve_model_path(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError, match="model path is empty"):
        resolve_model_path("  ")


def test_every_default_output_lies_in_run_dir_and_lessons_in_the_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    run = (tmp_path / "run").resolve()
    assert paths.run_dir() == run and run.is_dir()
    expected = {
        paths.tiny_model_dir: run / "models" / "tiny-internvl2",
        paths.synthetic_data_dir: run / "data" / "synthetic-foodieqa",
        paths.foodieqa_download_dir: run / "data" / "foodieqa",
        paths.prepared_dir: run / "data" / "foodieqa-xtuner",
        paths.finetune_dir: run / "finetune",
        paths.evaluation_dir: run / "evaluation",
        paths.notebook_dir: paths.project_root() / "notebooks",
        paths.notebook_build_dir: paths.project_root() / "build" / "notebooks",
    }
    assert {function: function() for function in expected} == expected


@pytest.mark.parametrize(
    ("value", "is_hub"),
    [("OpenGVLab/InternVL2-2B", True), ("./InternVL2-2B", False), ("/models/InternVL2-2B", False),
     ("models/", False), ("a/b/c", False)],
)
def test_hub_ids_are_told_from_paths(value, is_hub):
    assert paths.is_hub_id(value) is is_hub


def test_temporary_environment_restores_set_and_unset_variables(monkeypatch):
    import os

    from course_utils.paths import temporary_environment

    monkeypatch.setenv("COURSE_TEST_SET", "before")
    monkeypatch.delenv("COURSE_TEST_UNSET", raising=False)
    with temporary_environment({"COURSE_TEST_SET": "during", "COURSE_TEST_UNSET": "during"}):
        assert os.environ["COURSE_TEST_SET"] == os.environ["COURSE_TEST_UNSET"] == "during"
    assert os.environ["COURSE_TEST_SET"] == "before" and "COURSE_TEST_UNSET" not in os.environ


def test_paths_module_names_places_and_imports_nothing_of_the_course():
    """paths.py sits at the bottom of the package: the model and data code import it, never the other way round
    (it once imported tiny_model and foodieqa to build the defaults while they imported it). Only the error class,
    a module that imports nothing, is allowed."""
    import ast

    import course_utils.paths

    tree = ast.parse(Path(course_utils.paths.__file__).read_text(encoding="utf-8"))
    course_imports = [ast.unparse(node) for node in ast.walk(tree)
                      if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("course_utils"))]
    assert all(line == "from .errors import CourseError" for line in course_imports), course_imports
