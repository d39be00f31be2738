"""Lesson 03's exercise checks accept the right answer and answer a plausible wrong one with its hint."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter

import pytest

from course_utils.exercises import find_check
from course_utils.foodieqa import load_sivqa, make_synthetic_foodieqa, validate_foodieqa
from course_utils.foodieqa.validate import ANSWER_OUT_OF_RANGE, DUPLICATE_ID, MISSING_IMAGE

DISHES = 10


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synthetic_foodieqa(tmp_path_factory.mktemp("lesson03") / "FoodieQA", dishes=DISHES, seed=0)


def test_03_1_counts_a_40_percent_split_by_dish(source):
    records = validate_foodieqa(source).valid_records
    per_dish = set(Counter(r["food_meta"]["id"] for r in records).values())
    assert len(per_dish) == 1  # every synthetic dish has as many questions
    questions_per_dish = per_dish.pop()
    test_dishes = round(0.4 * DISHES)
    right = {"train_questions": (DISHES - test_dishes) * questions_per_dish,
             "test_questions": test_dishes * questions_per_dish,
             "train_dishes": DISHES - test_dishes, "test_dishes": test_dishes, "dishes_in_both": 0}
    check = find_check("03.1")
    assert check(right, records=records, seed=0) is None
    quarter = round(0.25 * DISHES)  # TEST_FRACTION's split instead of 40 %
    wrong = {**right, "test_dishes": quarter, "train_dishes": DISHES - quarter}
    assert "40%" in check(wrong, records=records, seed=0)
    assert "dishes_in_both" in check({"train": 1}, records=records, seed=0)


def test_03_2_scores_each_letter_on_the_answers():
    held_out = [{"answer_index": index, "style": "mcq"} for index in (0, 0, 1, 3)]
    check = find_check("03.2")
    assert check({"A": 0.5, "B": 0.25, "C": 0.0, "D": 0.25}, held_out=held_out) is None
    assert "not percentages" in check({"A": 50, "B": 25, "C": 0, "D": 25}, held_out=held_out)
    assert "mcq" in check({"A": 0, "B": 0, "C": 0, "D": 0}, held_out=held_out)


def test_03_3_names_the_reasons_of_the_broken_record(source, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    broken = copy.deepcopy(load_sivqa(source)[0])
    broken["answer"] = "4"
    broken["food_meta"]["food_file"] = "images/no_such_photo.jpg"
    check = find_check("03.3")
    assert "add it to the copy" in check({"reasons": set(), "skipped": 0}, scratch=scratch, broken=broken)

    shutil.copytree(source / "images", scratch / "images")
    (scratch / "sivqa_tidy.json").write_text(json.dumps(load_sivqa(source) + [broken], ensure_ascii=False))
    right = {"reasons": {ANSWER_OUT_OF_RANGE, DUPLICATE_ID, MISSING_IMAGE}, "skipped": 1}
    assert check(right, scratch=scratch, broken=broken) is None
    without_duplicate = {"reasons": {ANSWER_OUT_OF_RANGE, MISSING_IMAGE}, "skipped": 1}
    assert "copy of record 0" in check(without_duplicate, scratch=scratch, broken=broken)


def test_03_4_counts_the_labelled_positions_as_xtuner_does(source, tiny_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, trust_remote_code=True)
    sample = {"id": "q", "image": load_sivqa(source)[0]["food_meta"]["food_file"],
              "conversations": [{"from": "human", "value": "<image>\n这道菜的主要食材是什么？"},
                                {"from": "gpt", "value": "牛肉"}]}
    right = len(tokenizer.encode("牛肉", add_special_tokens=False)) + 1  # the answer, then <|im_end|>
    check = find_check("03.4")
    assert check(right, sample=sample, model_path=tiny_model_path, image_folder=source) is None
    assert "<|im_end|>" in check(right - 1, sample=sample, model_path=tiny_model_path, image_folder=source)
