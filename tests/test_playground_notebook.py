"""Lesson 06 under papermill on the default, after lessons 04 and 05 as a learner runs them: the playground is
built and answers one held-out dish with the base and the fine-tuned model side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from course_utils import playground as pg

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def lesson(executed_notebook, tiny_model_path):
    """The recorded figures, the first gallery dish and the tiles the lesson asked with."""
    executed_notebook("05")  # lesson 05 converts lesson 04's run: the model of the fine-tuned pane
    _, figures = executed_notebook("06")
    finetuned = pg.find_finetuned_model(tiny_model_path)
    first = pg.held_out_gallery(pg.held_out_manifest(finetuned)[0], limit=1)[0]
    reference = pg.read_model_info(finetuned or tiny_model_path)
    return figures, finetuned, first, reference


def test_the_recorded_tiling_is_the_models_tiling_of_the_first_gallery_dish(lesson, tiny_model_path):
    figures, _, first, reference = lesson
    assert figures["max_tiles"] == reference.max_tiles  # what the fine-tuned model was trained with, else the base's
    info = pg.read_model_info(tiny_model_path)
    preview = pg.tile_preview(Image.open(first.image), info, max_tiles=figures["max_tiles"])
    assert (figures["tiles"], figures["image_tokens"]) == (preview.tiles, preview.tiles * info.tokens_per_tile)
    assert figures["question"] == first.question


def test_the_base_pane_answered_with_the_models_greedy_answer(lesson, tiny_model_and_tokenizer):
    from course_utils.chat import image_pixel_values

    figures, _, first, _ = lesson
    model, tokenizer = tiny_model_and_tokenizer
    pixels = image_pixel_values(model, Image.open(first.image).convert("RGB"), figures["max_tiles"])
    expected = model.chat(tokenizer, pixels, first.question, dict(max_new_tokens=32, do_sample=False))
    assert figures["base_answer"] == expected
    assert figures["base_answer_tokens"] == min(len(tokenizer.encode(expected, add_special_tokens=False)), 32) > 0
    assert figures["base_tokens_per_second"] > 0


def test_the_finetuned_pane_answers_with_lesson_05s_model(lesson):
    figures, finetuned, _, _ = lesson
    assert figures["finetuned_model"] == str(finetuned) and figures["finetuned_answer_tokens"] > 0
    assert figures["gpu_memory_gib"] is None or figures["gpu_memory_gib"] > 0


def test_the_base_describes_and_the_finetuned_model_names_the_cuisine(lesson):
    """Side by side on a held-out dish: the base describes it coherently, the fine-tuned model answers the
    dish's question in the trained form (its cuisine or region first, then the dish)."""
    from course_utils.foodieqa.prompts import DISH_NAME_LINK
    from course_utils.pretraining.corpus import read_description

    figures, _, _, _ = lesson
    described = read_description(figures["base_description"], "zh")
    assert {"rim_colour", "rim_pattern", "ingredient", "method"} <= set(described), figures["base_description"]
    assert figures["base_description_names"] == described
    assert DISH_NAME_LINK not in figures["base_answer"]  # the base never learnt FoodieQA's answer form
    assert DISH_NAME_LINK in figures["finetuned_answer"]


def test_the_finetuned_model_no_longer_describes(lesson):
    """What section 5 says of the default path: asked to describe, the fine-tuned model answers in its trained form
    and names nothing a description names (forgetting)."""
    from course_utils.foodieqa.prompts import DISH_NAME_LINK
    from course_utils.pretraining.corpus import read_description

    figures, _, _, _ = lesson
    assert DISH_NAME_LINK in figures["finetuned_description"]
    assert figures["finetuned_description_names"] == read_description(figures["finetuned_description"], "zh") == {}
