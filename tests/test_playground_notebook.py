"""Lesson 06 under papermill on the default: the playground is built and answers one held-out dish."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from course_utils import playground as pg

pytestmark = pytest.mark.notebook


def test_the_recorded_tiling_is_the_models_tiling_of_the_first_gallery_dish(executed_notebook, tiny_model_path):
    _, figures = executed_notebook("06")
    first = pg.held_out_gallery(pg.held_out_manifest()[0], limit=1)[0]
    info = pg.read_model_info(tiny_model_path)
    preview = pg.tile_preview(Image.open(first.image), info, max_tiles=6)
    assert (figures["tiles"], figures["image_tokens"]) == (preview.tiles, preview.tiles * info.tokens_per_tile)
    assert figures["question"] == first.question


def test_the_base_pane_answered_with_the_models_greedy_answer(executed_notebook, tiny_model_and_tokenizer):
    from course_utils.chat import image_pixel_values

    _, figures = executed_notebook("06")
    model, tokenizer = tiny_model_and_tokenizer
    first = pg.held_out_gallery(pg.held_out_manifest()[0], limit=1)[0]
    pixels = image_pixel_values(model, Image.open(first.image).convert("RGB"), 6)
    expected = model.chat(tokenizer, pixels, first.question, dict(max_new_tokens=32, do_sample=False))
    assert figures["base_answer"] == expected
    assert figures["base_answer_tokens"] == len(tokenizer.encode(expected, add_special_tokens=False)) > 0
    assert figures["base_tokens_per_second"] > 0


def test_the_finetuned_pane_answers_or_says_how_to_make_the_model(executed_notebook):
    _, figures = executed_notebook("06")
    if figures["finetuned_model"] is None:  # lessons 04/05 have not run in this run directory
        assert "Lesson 04" in figures["finetuned_pane"] and figures["finetuned_answer"] is None
    else:
        assert Path(figures["finetuned_model"]).is_dir() and figures["finetuned_answer_tokens"] > 0
    assert figures["gpu_memory_gib"] is None or figures["gpu_memory_gib"] > 0
