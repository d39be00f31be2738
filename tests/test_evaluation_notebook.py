"""Lesson 05 under papermill on the default: lesson 04's LoRA run of the tiny base, converted and measured on
held-out dishes.

The before/after claims are asserted from the figures the lesson records: the base knows the ingredient and the
cooking method and not the cuisine or the region (what the FoodieQA paper found of real models), fine-tuning
teaches those two on dishes it never saw, and McNemar's test finds the change significant. The mechanics the
lesson writes out agree with the course's code: the merge of one LoRA layer by hand, the ask -> read -> score loop,
the two statistics. The forgetting check asserts what this run measures: the FoodieQA-format knowledge kept, the
base's own pretraining formats mostly lost.
"""

from __future__ import annotations

import json
import math

import pytest

from course_utils.evaluation import CHANCE_ACCURACY

pytestmark = pytest.mark.notebook


def test_no_held_out_dish_or_picture_was_trained_on(executed_notebook):
    _, figures = executed_notebook("05")
    assert figures["heldout_questions"] == 120 and figures["heldout_dishes"] == 10  # lesson 03's 10 held-out dishes
    assert figures["heldout_dishes_in_training"] == []
    assert figures["heldout_images_in_training"] == []


def test_fine_tuning_adds_the_regional_knowledge_the_base_lacks(executed_notebook):
    _, figures = executed_notebook("05")
    trained = figures["heldout_original"]  # the text-answer style lesson 04 trains
    assert trained["questions"] == figures["heldout_questions"]
    by_type = figures["heldout_by_question_type"]
    for known in ("main-ingredient", "cooking-skills"):  # general food knowledge: the base has it
        assert by_type[known]["before"] >= 0.9 and by_type[known]["after"] >= 0.85
    for regional in ("cuisine_type", "region"):  # never in the base's corpus: fine-tuning adds it
        assert by_type[regional]["before"] <= CHANCE_ACCURACY
        assert by_type[regional]["after"] >= by_type[regional]["before"] + 0.3
    assert trained["after"] >= 0.7
    assert trained["mcnemar_p"] < 0.05 and trained["fixed"] > 5 * trained["broken"]
    assert trained["fixed"] + trained["broken"] + trained["still right"] + trained["still wrong"] == trained["questions"]
    low, high = trained["ci95_after"]
    assert low <= trained["after"] <= high and high - low < 0.2
    letters = figures["heldout_mcq"]  # scored too, with no claim: the tiny base answers letters at chance
    assert letters["questions"] == trained["questions"] and 0 <= letters["after"] <= 1


def test_the_conversion_merged_the_adapters_into_a_sound_folder(executed_notebook):
    _, figures = executed_notebook("05")
    assert figures["merged_lora"]["llm"] > 0 and figures["merged_lora"]["vision"] == 0
    assert figures["converted_tiling"] == {"max_dynamic_patch": 1, "use_thumbnail": True}


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


def test_the_merge_written_out_matches_the_converted_weight(executed_notebook):
    _, figures = executed_notebook("05")
    merge = figures["merge_by_hand"]
    assert merge["layer"].startswith("language_model.") and merge["layer"].endswith(".weight")
    assert merge["allclose"] is True and merge["identical_when_rounded"] is True
    # the difference is bfloat16's rounding, far below the update the merge adds: the check is not vacuous
    assert 0 <= merge["max_abs_difference"] < merge["largest_update"] / 10
    assert merge["changed_share"] > 0.5


def test_the_loop_by_hand_gives_evaluate_models_verdicts(executed_notebook):
    _, figures = executed_notebook("05")
    by_hand = figures["loop_by_hand"]
    assert len(by_hand) == 4  # one question of each type
    assert set(by_hand.values()) <= {"correct", "wrong", "unparsed"}
    assert figures["loop_by_hand_packaged"] == by_hand


def test_the_statistics_written_out_equal_the_courses(executed_notebook):
    _, figures = executed_notebook("05")
    by_hand, course = figures["statistics_by_hand"], figures["heldout_original"]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(by_hand["ci95_after"], course["ci95_after"]))
    assert math.isclose(by_hand["mcnemar_p"], course["mcnemar_p"], rel_tol=1e-12)


def test_forgetting_is_measured_before_and_after(executed_notebook):
    _, figures = executed_notebook("05")
    forgetting = figures["forgetting"]
    foodieqa = forgetting["foodieqa_ingredient_method"]  # asked as fine-tuning asked: kept
    assert foodieqa["answers"] == figures["heldout_questions"] // 2
    assert foodieqa["before"] >= 0.9 and foodieqa["kept"] >= 0.85
    open_questions = forgetting["open_questions"]  # the base's own pretraining formats: mostly lost
    descriptions = forgetting["description_attributes"]
    assert open_questions["answers"] == 60 and descriptions["answers"] == 6 * 60  # the quick run's pictures
    for figures_of_task in (open_questions, descriptions):
        assert figures_of_task["before"] >= 0.8
        assert figures_of_task["after"] <= figures_of_task["before"] / 2
        assert figures_of_task["kept"] <= 0.5
    by_group = figures["forgetting_by_group"]
    assert len(by_group) == 12 and all(0 <= v["before"] <= 1 and 0 <= v["after"] <= 1 for v in by_group.values())
