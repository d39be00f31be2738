"""Lesson 02 runs under papermill on the default (CPU: the transformers engine and the course's server) and
records consistent figures."""

import json

import pytest

from course_utils.engines import choose_backend
from course_utils.engines.measure import read_recorded_throughput

pytestmark = pytest.mark.notebook
SMOKE_TOKENS, SMOKE_REQUESTS = 8, 4


def test_lesson_02_uses_auto_and_records_every_step(executed_notebook):
    _, figures = executed_notebook("02")
    assert figures["backend"] == choose_backend()[0]  # BACKEND="auto"; on CI (no GPU) the transformers engine
    assert 0 < figures["answer_tokens"] <= SMOKE_TOKENS
    assert figures["batch_answers"] == 4 and figures["chat_turns"] == 2
    assert figures["streamed_pieces"] >= 1
    assert figures["kv_bytes_per_token_internvl2_2b"] == 2 * 24 * 8 * 128 * 2  # K and V, 24 layers, 8 x 128, bf16
    assert figures["exercise_requests"] == SMOKE_REQUESTS


def test_lesson_02_shows_the_base_describing_the_dish(executed_notebook):
    """The tiny base is pretrained: asked to describe the picture, it names the rim, the pieces and the sauce."""
    from course_utils.pretraining.corpus import read_description

    _, figures = executed_notebook("02")
    described = read_description(figures["base_description"], "zh")
    assert {"rim_colour", "rim_pattern", "ingredient", "method"} <= set(described), figures["base_description"]


def test_lesson_02_measures_one_at_a_time_and_batched_on_the_same_requests(executed_notebook):
    _, figures = executed_notebook("02")
    one_by_one, batched = figures["throughput"][:2]
    backend = figures["backend"]
    assert [one_by_one["label"], batched["label"]] == [f"{backend}: one at a time", f"{backend}: answer_batch"]
    for row in (one_by_one, batched):
        assert row["requests"] == SMOKE_REQUESTS and 0 < row["output_tokens"] <= SMOKE_REQUESTS * SMOKE_TOKENS
        assert row["requests_per_s"] == pytest.approx(row["requests"] / row["seconds"], rel=0.01)
    assert figures["batch_speedup"] == pytest.approx(batched["requests_per_s"] / one_by_one["requests_per_s"])
    assert figures["recorded_gpu_rows"] == len(read_recorded_throughput()[0])
    memory = figures["memory_mib"]
    assert {"before loading", "model loaded", "before close", "after close"} <= set(memory)
    if "cuda_allocated_bytes" in memory["after close"]:  # on a GPU: close() gave the engine's memory back
        assert memory["after close"]["cuda_allocated_bytes"] <= memory["before loading"]["cuda_allocated_bytes"] + 64


def test_lesson_02_serves_and_stops(executed_notebook):
    path, figures = executed_notebook("02")
    assert figures["served_reply_is_text"] and figures["served_stream_pieces"] >= 1
    assert figures["server_stopped"]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    chart = [c for c in notebook["cells"] if c["cell_type"] == "code" and "plot_throughput" in "".join(c["source"])]
    assert [o for o in chart[0]["outputs"] if "image/png" in o.get("data", {})], "the throughput chart is shown"
