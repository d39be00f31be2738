"""The learner's path, run as a learner runs it: ``MODEL_PATH`` set to a model folder the course did not make.

A learner downloads InternVL2 into a folder of their own and sets ``MODEL_PATH``: the folder has no course marker,
and lessons 03 -> 04 -> 05 -> 06 must take it through the lesson's LoRA recipe, the conversion (adapters merged,
a ``config.json`` every reader can use) and the before/after evaluation. Here the folder is a copy of the tiny
base without the course's marker files, in a run directory of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from course_utils.course_run import execute_notebook, recorded_figures

pytestmark = pytest.mark.notebook

COURSE_MARKERS = (".course-output.json", "course_build.json")


@pytest.fixture(scope="module")
def learner(tiny_model_path, tmp_path_factory):
    """(downloaded model folder, run dir, {lesson: figures}) after lessons 03-06 ran with MODEL_PATH set."""
    root = tmp_path_factory.mktemp("learner")
    download = shutil.copytree(tiny_model_path, root / "InternVL2-download", ignore=shutil.ignore_patterns(*COURSE_MARKERS))
    run_dir = root / "runs"
    env = {"MODEL_PATH": str(download), "RUN_DIR": str(run_dir)}
    figures = {}
    for lesson in ("03", "04", "05", "06"):  # each with its own defaults, as a learner runs them
        executed = execute_notebook(lesson, root / "executed", env=env)
        figures[lesson] = recorded_figures(executed)
    return download, run_dir, figures


def test_the_download_is_trained_with_the_lessons_lora_recipe_and_left_untouched(learner):
    download, run_dir, figures = learner
    assert not any((download / marker).exists() for marker in COURSE_MARKERS)
    run = json.loads((run_dir / "finetune" / "lesson04" / "course-finetune.json").read_text(encoding="utf-8"))
    assert run["base_model"] == str(download)
    assert run["trained"] == {"llm": "lora", "vision": "frozen", "projector": "full"}
    assert run["complete"] and run["steps"] == 10 * 45  # the tiny recipe's 10 epochs of 45 steps
    assert figures["04"]["final_loss"] < 0.25 * figures["04"]["first_loss"]


def test_the_converted_folder_merges_lora_and_keeps_concrete_tiling(learner):
    download, run_dir, figures = learner
    converted = run_dir / "models" / "lesson04-merged"
    config = json.loads((converted / "config.json").read_text(encoding="utf-8"))
    base = json.loads((download / "config.json").read_text(encoding="utf-8"))
    # the training config says None ("the model's own tiling"): the base's own values, never null
    assert config["max_dynamic_patch"] == base["max_dynamic_patch"] == 1
    assert config["use_thumbnail"] is base["use_thumbnail"] is True
    assert figures["05"]["merged_lora"]["llm"] > 0 and figures["05"]["merged_lora"]["vision"] == 0  # layers merged
    assert figures["05"]["converted_tiling"] == {"max_dynamic_patch": 1, "use_thumbnail": True}
    conversion = json.loads((converted / "course-conversion.json").read_text(encoding="utf-8"))
    assert conversion["base_model"] == str(download)


def test_lesson_05_measures_the_fine_tuned_download_on_held_out_dishes(learner):
    _, _, figures = learner
    trained = figures["05"]["heldout_original"]
    assert figures["05"]["heldout_dishes_in_training"] == []
    assert trained["after"] >= 0.7 and trained["after"] >= trained["before"] + 0.15
    assert trained["mcnemar_p"] < 0.05


def test_lesson_06_puts_the_base_and_the_fine_tuned_download_side_by_side(learner):
    download, run_dir, figures = learner
    assert figures["06"]["finetuned_model"] == str(run_dir / "models" / "lesson04-merged")
    assert figures["06"]["base_answer"] and figures["06"]["finetuned_answer"]
