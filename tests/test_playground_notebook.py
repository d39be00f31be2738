"""Lesson 06 under papermill on the default: the playground is built and answers one held-out dish.

What the lesson shows depends on the run directory: with lesson 05's converted model there (when lesson 05 ran
earlier in the session) the gallery and the tiles follow it, so the expectations are worked out the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from course_utils import playground as pg

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def lesson(executed_notebook, tiny_model_path):
    """The recorded figures, the first gallery dish and the tiles the lesson asked with."""
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


def test_the_finetuned_pane_answers_or_says_how_to_make_the_model(lesson):
    figures, finetuned, _, _ = lesson
    if finetuned is None:  # lessons 04/05 have not run in this run directory
        assert figures["finetuned_model"] is None and figures["finetuned_answer"] is None
        assert figures["finetuned_pane"] == pg.FINETUNE_HINT
    else:
        assert figures["finetuned_model"] == str(finetuned) and figures["finetuned_answer_tokens"] > 0
    assert figures["gpu_memory_gib"] is None or figures["gpu_memory_gib"] > 0
