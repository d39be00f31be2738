"""The tiny base model: its pretraining corpus, its recipe (rerun short here), and what the shipped weights know."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from course_utils.foodieqa.synthetic import CUISINES, INGREDIENTS, METHODS, Dish
from course_utils.pretraining.corpus import (
    ATTRIBUTES, LANGUAGES, TASKS, attribute_value, describe, draw_sample, read_description,
)
from course_utils.pretraining.pretrain import Recipe, encode_sample, pretrain_tiny_base


# ----------------------------------------------------------------------------------------------- corpus
def test_a_sample_is_a_function_of_seed_and_index():
    first, again, other = draw_sample(0, 7), draw_sample(0, 7), draw_sample(1, 7)
    assert (first.question, first.answer, first.image.tobytes()) == (again.question, again.answer, again.image.tobytes())
    assert first.image.tobytes() != other.image.tobytes()


def test_the_corpus_never_names_a_cuisine_region_or_dish():
    """Regional knowledge is what fine-tuning adds: no sample of the corpus may teach it."""
    regional = {c.name for c in CUISINES} | {c.region for c in CUISINES} | {c.dish_prefix for c in CUISINES}
    regional |= {c.name_en for c in CUISINES} | {c.region_en for c in CUISINES} | {c.style_en for c in CUISINES}
    regional |= {"菜系", "cuisine", "region", "地区"}
    seen_tasks = set()
    for index in range(400):
        sample = draw_sample(0, index)
        seen_tasks.add(sample.task)
        text = sample.question + sample.answer
        assert not [word for word in regional if word in text], (index, text)
    assert seen_tasks == set(TASKS)


def test_every_description_reads_back_as_the_attributes_drawn():
    from course_utils.foodieqa.synthetic import PictureFacts

    for cuisine in CUISINES:
        for ingredient in INGREDIENTS:
            for method in METHODS:
                facts = PictureFacts(Dish(0, cuisine, ingredient, method), pieces=6, position="left")
                for language in LANGUAGES:
                    found = read_description(describe(facts, language), language)
                    assert found == {a: attribute_value(facts, a, language) for a in ATTRIBUTES}


def test_a_sample_is_labelled_on_its_answer_only(tiny_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    input_ids, labels = encode_sample(tokenizer, "盘边是什么颜色？", "红色。", num_image_token=64)
    answer = [token for token in labels if token != -100]
    assert tokenizer.decode(answer) == "红色。<|im_end|>" and input_ids[-len(answer):] == answer
    assert input_ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 64
    assert input_ids[0] == tokenizer.bos_token_id


# ----------------------------------------------------------------------------------------------- recipe
def test_a_short_rerun_of_the_recipe_learns_and_is_deterministic(session_run_dir, tmp_path):
    recipe = Recipe(seed=3, steps=40, batch_size=8, lr=1e-3, warmup_steps=4)
    record = pretrain_tiny_base(tmp_path / "a", recipe, evaluate=False, workers=1, log=lambda line: None)
    losses = [entry["loss"] for entry in record["losses"]]
    assert len(losses) == 10 and losses[-1] < 0.6 * losses[0]
    again = pretrain_tiny_base(tmp_path / "b", Recipe(seed=3, steps=4, batch_size=8, warmup_steps=1), evaluate=False,
                               workers=0, log=lambda line: None)
    twice = pretrain_tiny_base(tmp_path / "c", Recipe(seed=3, steps=4, batch_size=8, warmup_steps=1), evaluate=False,
                               workers=1, log=lambda line: None)
    assert again["weights_sha256"] == twice["weights_sha256"]  # same seed, same weights (workers or not)
    assert again["weights_sha256"] != record["weights_sha256"]


def test_the_shipped_weights_are_the_recorded_ones(tiny_model_path):
    from course_utils.tiny_model import TINY_BASE_DIR, file_sha256

    record = json.loads((TINY_BASE_DIR / "pretraining.json").read_text(encoding="utf-8"))
    assert file_sha256(tiny_model_path / "model.safetensors") == record["weights_sha256"]
    assert record["recipe"] == asdict(Recipe())  # the command's defaults are the shipped recipe
    assert record["losses"][-1]["loss"] < 0.1 * record["losses"][0]["loss"]


def test_the_shipped_weights_are_refused_when_changed(tmp_path, monkeypatch):
    import shutil

    from course_utils import tiny_model
    from course_utils.errors import CourseError

    copy = shutil.copytree(tiny_model.TINY_BASE_DIR, tmp_path / "tiny_base")
    with open(copy / "model.safetensors", "r+b") as weights:
        weights.seek(-4, 2)
        weights.write(b"\0\0\0\1")
    monkeypatch.setattr(tiny_model, "TINY_BASE_DIR", copy)
    with pytest.raises(CourseError, match="does not match the checksum"):
        tiny_model.shipped_base_weights()


# ----------------------------------------------------------------------------------------------- the base
@pytest.fixture(scope="module")
def base_knowledge(tiny_model_path):
    from course_utils.pretraining.evaluate import evaluate_base

    return evaluate_base(tiny_model_path, pictures=24)


def test_the_base_describes_held_out_pictures(base_knowledge):
    description = base_knowledge["description"]
    for attribute in ("rim_colour", "rim_pattern", "ingredient", "method"):
        assert description[attribute] >= 0.9, (attribute, description)
    assert base_knowledge["summary"]["description_attributes_right"] >= 0.85


def test_the_base_does_not_know_the_cuisine(tiny_model_path):
    """Asked FoodieQA's cuisine question, the base never names a cuisine: it has never seen one."""
    from course_utils.foodieqa.synthetic import QUESTIONS
    from course_utils.pretraining.evaluate import answer_all, load_for_evaluation

    model, tokenizer = load_for_evaluation(tiny_model_path)
    question = dict((kind, zh) for kind, zh, _ in QUESTIONS)["cuisine_type"]
    pictures = [draw_sample(5, index, task="describe").image for index in range(8)]
    replies = answer_all(model, tokenizer, [(picture, question) for picture in pictures], max_new_tokens=24)
    assert all(reply for reply in replies)
    assert not [reply for reply in replies if any(c.name in reply for c in CUISINES)], replies
