"""Lesson 01 runs on the embedded default and records the architecture's figures."""

import json

from course_utils.internvl import count_tiles


def test_lesson_01_records_the_internvl2_figures(executed_notebook, tiny_model_path):
    path, figures = executed_notebook("01")
    assert 2.1e9 < figures["internvl2_2b_parameters"] < 2.3e9
    assert 2.8e8 < figures["internvl2_2b_vision_parameters"] < 3.2e8  # InternViT-300M
    assert 1.7e9 < figures["internvl2_2b_llm_parameters"] < 2.0e9  # InternLM2-1.8B
    assert figures["internvl2_2b_tokens_800x600"] == count_tiles(800, 600, 1, 12, 448) * 256 == 3328
    config = json.loads((tiny_model_path / "config.json").read_text())
    tokens_per_tile = (config["force_image_size"] // config["vision_config"]["patch_size"]) ** 2 // 4
    assert figures["tokens_per_tile"] == tokens_per_tile
    tiles = count_tiles(800, 600, 1, config["max_dynamic_patch"], config["force_image_size"])
    assert figures["prompt_image_tokens"] == tiles * tokens_per_tile
    assert figures["streamed_pieces"] > 1 and figures["batch_answers"] == 2


def test_lesson_01_shows_its_pictures(executed_notebook):
    path, _ = executed_notebook("01")
    notebook = json.loads(path.read_text())
    images = [o for c in notebook["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3  # architecture families, parameter split, tiling
