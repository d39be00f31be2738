"""Lesson 02 runs under papermill on the default (CPU: the transformers engine and the course's server) and
records consistent figures; the LMDeploy code it shows without running it is what LMDeploy 0.10.2 accepts."""

import json
import re

import pytest

from course_utils.course_run import find_notebook
from course_utils.engines import choose_backend
from course_utils.engines.kv_cache import QUANT_POLICIES
from course_utils.engines.measure import read_recorded_throughput
from course_utils.exercises.lesson02 import finishing_steps

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
    # LMDeploy's own cells ran only where LMDeploy runs
    assert figures["lmdeploy_pipeline_batch"] == (None if figures["backend"] == "transformers" else 4)


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


def test_lesson_02_times_the_kv_cache_on_and_off(executed_notebook):
    _, figures = executed_notebook("02")
    on, off = figures["kv_cache_runs"]
    assert (on["KV cache"], off["KV cache"]) == ("on", "off")
    assert figures["kv_cache_same_tokens"] and on["tokens"] == off["tokens"] > 1  # greedy: the cache changes no token
    assert figures["kv_cache_speedup"] == pytest.approx(off["seconds"] / on["seconds"], rel=0.01)
    assert figures["kv_cache_speedup"] > 1
    for run in (on, off):
        assert 0 < run["first token (s)"] < run["seconds"] and run["each later token (ms)"] > 0


def test_lesson_02_measures_latency_next_to_throughput(executed_notebook):
    _, figures = executed_notebook("02")
    latency = figures["latency"]
    assert 0 < latency["time to first token (s)"] < latency["whole answer (s)"]
    assert 1 < latency["tokens"] <= SMOKE_TOKENS and latency["time per output token (ms)"] > 0
    assert latency["time per output token (ms)"] == pytest.approx(
        1000 * (latency["whole answer (s)"] - latency["time to first token (s)"]) / (latency["tokens"] - 1))
    streamed, one_by_one, batched = figures["latency_and_throughput"]
    measured = figures["throughput"]
    assert streamed["requests/s"] == pytest.approx(1 / latency["whole answer (s)"])
    assert one_by_one["requests/s"] == measured[0]["requests_per_s"]
    assert one_by_one["one answer takes (s)"] == pytest.approx(measured[0]["seconds"] / measured[0]["requests"])
    assert (batched["requests/s"], batched["one answer takes (s)"]) == (measured[1]["requests_per_s"],
                                                                          measured[1]["seconds"])


def test_lesson_02_draws_static_and_continuous_batching_from_a_schedule_that_agrees_with_the_checks(
        executed_notebook):
    path, figures = executed_notebook("02")
    simulated = figures["batching_illustration"]
    steps, slots = simulated["answer_steps"], simulated["slots"]
    for name in ("static", "continuous"):
        ends = finishing_steps(steps, slots, continuous=name == "continuous")
        assert simulated[name]["all done at step"] == max(ends)
        assert simulated[name]["mean step an answer is complete"] == pytest.approx(sum(ends) / len(ends))
        assert simulated[name]["slots busy (%)"] == pytest.approx(100 * sum(steps) / (slots * max(ends)))
    assert simulated["continuous"]["all done at step"] < simulated["static"]["all done at step"]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    timeline = [c for c in notebook["cells"] if c["cell_type"] == "code" and "broken_barh" in "".join(c["source"])]
    assert [o for o in timeline[0]["outputs"] if "image/png" in o.get("data", {})], "the timeline is shown"


def test_lesson_02_sizes_the_kv_cache_for_each_quant_policy(executed_notebook):
    _, figures = executed_notebook("02")
    plans = {(plan["quant_policy"], plan["cache_max_entry_count"]): plan for plan in figures["kv_plans_internvl2_2b"]}
    assert set(plans) == {(policy, fraction) for policy in QUANT_POLICIES for fraction in (0.2, 0.8)}
    per_token = {policy: plans[policy, 0.2]["bytes per token"] for policy in QUANT_POLICIES}
    assert per_token[0] == figures["kv_bytes_per_token_internvl2_2b"] == 2 * 24 * 8 * 128 * 2
    assert per_token[8] == 2 * 24 * 8 * (128 + 4) and per_token[4] == 2 * 24 * 8 * (64 + 4)  # + scale and zero point
    for fraction in (0.2, 0.8):
        requests = [plans[policy, fraction]["requests_at_once"] for policy in QUANT_POLICIES]
        assert requests == sorted(requests) and requests[0] < requests[-1]


def lesson_02_shell_commands() -> list[str]:
    """The lmdeploy commands the lesson tells a learner to type, continuation lines joined."""
    notebook = json.loads(find_notebook("02").read_text(encoding="utf-8"))
    text = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_lmdeploy_commands_the_lesson_shows_are_what_lmdeploy_parses(lmdeploy_parser):
    commands = lesson_02_shell_commands()
    assert [command.split()[:3] for command in commands] == [["lmdeploy", "serve", "api_server"],
                                                             ["lmdeploy", "lite", "auto_awq"],
                                                             ["lmdeploy", "serve", "api_server"]]
    served, quantized, served_awq = (lmdeploy_parser.parse_args(command.split()[1:]) for command in commands)
    assert (served.backend, served.server_name, served.session_len, served.cache_max_entry_count) == (
        "pytorch", "127.0.0.1", 8192, 0.2)
    assert (quantized.w_bits, quantized.w_group_size, quantized.work_dir) == (4, 128, served_awq.model_path)
    assert (served_awq.backend, served_awq.model_format, served_awq.server_name) == ("turbomind", "awq", "127.0.0.1")


def test_the_lmdeploy_python_the_lesson_shows_uses_lmdeploys_names():
    """The cells that run only with LMDeploy on a GPU: their imports, configs and calls exist in LMDeploy 0.10.2."""
    import ast

    from lmdeploy import GenerationConfig, PytorchEngineConfig
    from lmdeploy.messages import Response
    from lmdeploy.serve.vl_async_engine import VLAsyncEngine

    notebook = json.loads(find_notebook("02").read_text(encoding="utf-8"))
    lmdeploy_cells = "\n".join("".join(cell["source"]) for cell in notebook["cells"]
                               if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("if lmdeploy_here"))
    tree = ast.parse(lmdeploy_cells)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = __import__(node.module, fromlist=[alias.name for alias in node.names])
            assert all(hasattr(module, alias.name) for alias in node.names), ast.unparse(node)
    called = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "pipe"}
    assert called == {"stream_infer", "close"} and all(hasattr(VLAsyncEngine, name) for name in called)
    read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id in ("response", "r", "chunk")}
    assert read == {"text", "generate_token_len"} and read <= set(Response.__dataclass_fields__)
    config = PytorchEngineConfig(session_len=8192, cache_max_entry_count=0.2)
    assert (config.session_len, config.cache_max_entry_count, config.quant_policy) == (8192, 0.2, 0)
    assert GenerationConfig(max_new_tokens=8, do_sample=False).do_sample is False
