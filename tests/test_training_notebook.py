"""Lesson 04 runs under papermill on the default: the lesson's LoRA recipe on the tiny base through a real
`xtuner train` run, interrupted, refused, resumed."""

from __future__ import annotations

import pytest

from course_utils.training import load_finetune_manifest

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def lesson(executed_notebook):
    return executed_notebook("04")


def test_the_interrupted_run_resumes_at_the_next_step_and_finishes(lesson):
    _, figures = lesson
    assert figures["interrupted_at_step"] == 20
    assert figures["resumed_from_step"] == 20 and figures["first_resumed_step"] == 21
    assert figures["steps"] == figures["planned_steps"] == 10 * -(-360 // 8)  # 10 epochs of lesson 03's 360 questions
    assert figures["resumed_lr_matches_schedule"] is True
    assert figures["final_loss"] < 0.25 * figures["first_loss"]
    assert figures["peak_memory_mb"] > 0


def test_the_manifest_names_the_newest_checkpoint(lesson, session_run_dir):
    _, figures = lesson
    manifest = load_finetune_manifest("lesson04")
    assert manifest["complete"] and manifest["steps"] == figures["steps"]
    assert manifest["checkpoint"].endswith(f"iter_{figures['steps']}.pth")
    assert manifest["prepared_data"] == str((session_run_dir / "data" / "foodieqa-xtuner").resolve())


def test_lora_counts_and_what_trained(lesson, lesson04_run):
    _, figures = lesson
    # InternVL2-2B: LoRA r=128 on wqkv, wo, w1, w2, w3 of 24 layers and on the output layer, plus mlp1
    per_layer = 128 * ((2048 + 4096) + (2048 + 2048) + 2 * (2048 + 8192) + (8192 + 2048))
    lora = 24 * per_layer + 128 * (2048 + 92553)
    mlp1 = (4096 * 2 + 4096 * 2048 + 2048) + (2048 * 2048 + 2048)
    assert figures["lora_trained_parameters_2b"] == lora + mlp1
    assert 0.05 < figures["lora_trained_fraction_2b"] < 0.08
    # the tiny base trains exactly as InternVL2-2B does: LoRA on the LLM, the projector, the ViT frozen
    assert figures["trained"] == lesson04_run["trained"] == {"llm": "lora", "vision": "frozen", "projector": "full"}
