"""Lesson 03 runs under papermill on the default data and shows consistent figures, statistics and the sample grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_utils.foodieqa import load_manifest

pytestmark = pytest.mark.notebook


def outputs_of_cell_calling(notebook_path, call: str) -> list[dict]:
    notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code" and call in "".join(c["source"])]
    assert len(cells) == 1, f"expected one cell calling {call}"
    return cells[0]["outputs"]


def test_recorded_figures_are_consistent(executed_notebook):
    _, figures = executed_notebook("03")
    assert figures["valid_questions"] + figures["skipped_records"] == figures["questions_total"]
    assert figures["train_samples"] + figures["test_samples"] == figures["valid_questions"] > 0
    assert figures["dishes_in_both_splits"] == []
    dishes = figures["train_dishes"] + figures["test_dishes"]
    assert figures["train_dishes"] > 0 and figures["test_dishes"] == round(0.25 * dishes)
    assert sum(figures["questions_per_type"].values()) == figures["valid_questions"]
    assert sum(figures["questions_per_cuisine"].values()) == figures["valid_questions"]
    assert sum(figures["answer_positions"].values()) == figures["valid_questions"]
    assert figures["prompt_style"] == "original"  # the default: the style the tiny base learns


def test_statistics_and_sample_grid_are_shown_as_images(executed_notebook):
    path, _ = executed_notebook("03")
    for call in ("plot_statistics", "plot_sample_grid"):
        images = [o for o in outputs_of_cell_calling(path, call) if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{call} should show exactly one image"


def test_the_manifest_for_lesson_04_matches_the_recorded_figures(executed_notebook, session_run_dir):
    _, figures = executed_notebook("03")
    manifest = load_manifest(session_run_dir / "data" / "foodieqa-xtuner")
    assert manifest["counts"]["train_questions"] == figures["train_samples"]
    assert manifest["counts"]["test_questions"] == figures["test_samples"]
    assert len(json.loads(Path(manifest["train_path"]).read_text(encoding="utf-8"))) == figures["train_samples"]


def test_the_written_out_split_and_samples_are_prepare_foodieqas(executed_notebook):
    _, figures = executed_notebook("03")
    assert figures["written_out_split_matches"] is True
    assert figures["written_out_samples_match"] is True


def test_the_rendered_sample_has_the_models_image_tokens_and_trains_on_the_answer_only(
        executed_notebook, session_run_dir, tiny_model_and_tokenizer):
    """The figures of section 7 against the model's own count of image tokens, its own tiling of the picture and
    its own chat prompt (``model.chat``'s conversation, not the tokenizer's template the lesson uses)."""
    from PIL import Image

    from course_utils.chat import image_pixel_values

    _, figures = executed_notebook("03")
    model, tokenizer = tiny_model_and_tokenizer
    manifest = load_manifest(session_run_dir / "data" / "foodieqa-xtuner")
    samples = json.loads(Path(manifest["train_path"]).read_text(encoding="utf-8"))
    sample = next(s for s in samples if s["id"] == figures["rendered_sample_id"])
    question, answer = (turn["value"] for turn in sample["conversations"])
    picture = Image.open(Path(manifest["image_folder"]) / sample["image"]).convert("RGB")
    tiles = len(image_pixel_values(model, picture))

    assert figures["written_out_tokens_match_xtuner"] is True
    assert (figures["tokens_per_tile"], figures["sample_tiles"]) == (model.num_image_token, tiles)
    assert figures["sample_image_tokens"] == tiles * model.num_image_token
    assert figures["trained_text"] == answer + "<|im_end|>"
    assert figures["trained_tokens"] == len(tokenizer.encode(answer, add_special_tokens=False)) + 1
    prompt_tokens = len(tokenizer(model.build_prompt(question, None, [tiles]))["input_ids"])
    assert figures["sample_tokens"] == prompt_tokens + figures["trained_tokens"]
