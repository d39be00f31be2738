"""Lesson 05 under papermill on the default: the smoke-trained tiny model, converted and measured on held-out dishes.

The before/after claims are asserted from the figures the lesson records: the untrained model at chance or below,
the fine-tuned one at 80 % or more in the text-answer style it was trained in, and McNemar's test significant.
"""

from __future__ import annotations

import json

import pytest

from course_utils.evaluation import CHANCE_ACCURACY

pytestmark = pytest.mark.notebook


def test_no_held_out_dish_or_picture_was_trained_on(executed_notebook):
    _, figures = executed_notebook("05")
    assert figures["heldout_questions"] == 128 and figures["heldout_dishes"] >= 10  # smoke mode: 128 of them
    assert figures["heldout_dishes_in_training"] == []
    assert figures["heldout_images_in_training"] == []


def test_fine_tuning_lifts_held_out_accuracy_from_chance_to_80_percent(executed_notebook):
    _, figures = executed_notebook("05")
    trained = figures["heldout_original"]  # the text-answer style the smoke model is trained in
    assert trained["questions"] == figures["heldout_questions"]
    assert trained["before"] <= CHANCE_ACCURACY
    assert trained["after"] >= 0.80
    assert trained["mcnemar_p"] < 0.05 and trained["fixed"] > trained["broken"]
    assert trained["fixed"] + trained["broken"] + trained["still right"] + trained["still wrong"] == trained["questions"]
    low, high = trained["ci95_after"]
    assert low <= trained["after"] <= high and high - low < 0.2
    letters = figures["heldout_mcq"]  # scored too, with no claim: the tiny model is not trained on letters
    assert letters["questions"] == trained["questions"] and 0 <= letters["after"] <= 1


def test_the_converted_folder_is_complete_and_the_base_folder_refused(executed_notebook):
    _, figures = executed_notebook("05")
    files = set(figures["converted_files"])
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "modeling_internvl_chat.py",
            "modeling_internlm2.py", "conversation.py", "course-conversion.json"} <= files
    assert figures["base_folder_refused"] is True


def test_results_file_and_paper_protocol(executed_notebook, session_run_dir):
    _, figures = executed_notebook("05")
    results = json.loads((session_run_dir / "evaluation" / figures["results_file"]).read_text(encoding="utf-8"))
    comparison = results["reports"]["original"]["comparison"]
    assert comparison["after"]["accuracy"] == figures["heldout_original"]["after"]
    assert len(results["reports"]["original"]["questions"]) == figures["heldout_questions"]
    paper = figures["paper_protocol"]
    assert set(paper) == {"paper_zh", "paper_en"}
    assert all(entry["questions"] == 48 and 0 <= entry["accuracy"] <= 1 for entry in paper.values())
