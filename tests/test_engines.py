"""The engine interface on the transformers backend (tiny model, CPU): the same answers as the model card's API,
batches, streaming, history, settings, session_len, close(), and backend selection."""

import ast
import json
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image

from course_utils.chat import image_pixel_values
from course_utils.engines import GenerationSettings, choose_backend, load_engine
from course_utils.engines.interface import open_image, place_image, split_image_placeholder

SHORT = GenerationSettings(max_new_tokens=10)


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    engine = load_engine(tiny_model_path, backend="auto")  # no GPU here: auto is transformers
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def dish():
    return Image.new("RGB", (300, 300), (200, 50, 50))


def greedy(max_new_tokens=10):
    return dict(max_new_tokens=max_new_tokens, do_sample=False)


def test_choose_backend_prefers_lmdeploy_only_with_cuda_and_lmdeploy():
    assert choose_backend(cuda=True, lmdeploy_installed=True)[0] == "lmdeploy"
    assert choose_backend(cuda=True, lmdeploy_installed=False) == (
        "transformers", "CUDA GPU found but LMDeploy is not installed (`make env` installs it)")
    backend, reason = choose_backend(cuda=False, lmdeploy_installed=True)
    assert backend == "transformers" and "no CUDA GPU" in reason
    assert choose_backend()[0] == ("lmdeploy" if torch.cuda.is_available() else "transformers")


def imported_modules(module_path: Path) -> set[str]:
    """Every module ``module_path`` imports, at its top or inside a function (relative names keep their dots)."""
    tree = ast.parse(module_path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_engine_imports_run_one_way():
    engines = Path(__file__).parents[1] / "course_utils" / "engines"
    backends = {".transformers_engine", ".lmdeploy_engine"}
    assert not imported_modules(engines / "interface.py") & (backends | {".loader"})
    for backend in backends:
        assert ".interface" in imported_modules(engines / f"{backend[1:]}.py")
    assert backends <= imported_modules(engines / "loader.py")


def test_auto_loads_the_transformers_engine_on_cpu(engine, tiny_model_path):
    assert engine.backend == "transformers" and engine.model_path == tiny_model_path
    assert str(engine.model.device) == "cpu" and engine.model.dtype == torch.float32


def test_answer_is_the_model_cards_chat_and_counts_the_generated_tokens(engine, dish):
    model, tokenizer = engine.model, engine.tokenizer
    answer = engine.answer(dish, "这是什么菜？", SHORT)
    tiles = image_pixel_values(model, dish)
    assert answer.text == model.chat(tokenizer, tiles, "这是什么菜？", greedy())
    # the reference count: generate() on the same prompt, tokens before the end token
    prompt = model.build_prompt("<image>\n这是什么菜？", num_patches_list=[tiles.shape[0]])
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    new = model.generate(tiles, ids, torch.ones_like(ids), eos_token_id=end, **greedy())[0].tolist()
    assert answer.output_tokens == (new.index(end) if end in new else len(new))
    assert answer.seconds > 0


def test_batch_answers_equal_single_answers_in_request_order(engine, dish):
    requests = [(dish, "这是什么菜？"), (None, "你好"), (dish.resize((600, 200)), "哪里的菜？"), (None, "再见")]
    engine.max_batch_size = 2  # two generate() calls, each mixing a request with an image and one without
    try:
        batch = engine.answer_batch(requests, SHORT)
    finally:
        engine.max_batch_size = None
    singles = [engine.answer(image, question, SHORT) for image, question in requests]
    assert [a.text for a in batch] == [a.text for a in singles]
    assert [a.output_tokens for a in batch] == [a.output_tokens for a in singles]


def test_streamed_pieces_join_to_the_answer(engine, dish):
    pieces = list(engine.stream(dish, "请描述这道菜。", SHORT))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == engine.answer(dish, "请描述这道菜。", SHORT).text


def test_two_turn_chat_keeps_the_image_in_the_first_turn(engine, dish):
    first, history = engine.chat(dish, "这是什么菜？", None, SHORT)
    second, history = engine.chat(dish, "它来自哪里？", history, SHORT)
    assert [q for q, _ in history] == ["<image>\n这是什么菜？", "它来自哪里？"]
    assert [a for _, a in history] == [first.text, second.text]
    tiles = image_pixel_values(engine.model, dish)
    expected = engine.model.chat(engine.tokenizer, tiles, "它来自哪里？", greedy(), history=history[:1])
    assert second.text == expected
    streamed = "".join(engine.stream(dish, "它来自哪里？", SHORT, history=history[:1])).strip()
    assert streamed == expected


def test_place_image_adds_the_placeholder_once_per_conversation():
    assert place_image("q", None, True) == "<image>\nq"
    assert place_image("q", [("<image>\nfirst", "a")], True) == "q"
    assert place_image("q", [], False) == "q"
    assert place_image("<image> q", None, True) == "<image> q"
    assert split_image_placeholder("<image>\nq <image>") == ("q <image>", True)
    assert split_image_placeholder("a <image> b") == ("a  b", True) and split_image_placeholder("q") == ("q", False)


def test_sampling_with_a_seed_repeats_and_greedy_ignores_sampling_knobs(engine, dish):
    sampled = GenerationSettings(max_new_tokens=10, temperature=1.0, top_k=50, seed=7)
    first, again = engine.answer(dish, "这是什么菜？", sampled), engine.answer(dish, "这是什么菜？", sampled)
    assert first.text == again.text
    other = engine.answer(dish, "这是什么菜？", GenerationSettings(max_new_tokens=10, temperature=1.0, top_k=50, seed=8))
    assert other.text != first.text  # near-flat random weights: two seeds give different samples
    greedy_answer = engine.answer(dish, "这是什么菜？", GenerationSettings(max_new_tokens=10, top_p=0.5, top_k=3))
    assert greedy_answer.text == engine.answer(dish, "这是什么菜？", SHORT).text


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-0.1), dict(top_p=0.0), dict(top_k=-1),
                                 dict(repetition_penalty=0.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        GenerationSettings(**bad)


def test_session_len_caps_the_answer_and_refuses_a_longer_prompt(engine, dish):
    prompt_tokens = len(engine.tokenizer(engine.model.build_prompt("<image>\nq", num_patches_list=[1])).input_ids)
    engine.session_len = prompt_tokens + 3
    try:
        assert engine.answer(dish, "q", GenerationSettings(max_new_tokens=20)).output_tokens <= 3
        with pytest.raises(ValueError, match="session_len"):
            engine.answer(dish, "q " * 40, SHORT)  # a longer question: the prompt alone is over the limit
    finally:
        engine.session_len = None


def test_a_missing_image_is_one_clear_error(engine, tmp_path):
    with pytest.raises(ValueError, match="cannot read the image"):
        engine.answer(tmp_path / "no-such-dish.jpg", "q", SHORT)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        open_image(tmp_path / "broken.jpg")


def test_load_engine_refuses_bad_arguments(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_engine(tiny_model_path, backend="vllm")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_engine(tmp_path / "missing")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            load_engine(tiny_model_path, backend="lmdeploy")
    with pytest.raises(ValueError, match="dtype"):
        load_engine(tiny_model_path, backend="transformers", dtype="float8")


def test_the_transformers_engine_names_the_lmdeploy_knobs_it_does_not_use(tiny_model_path):
    with pytest.warns(UserWarning, match="cache_max_entry_count, quant_policy: LMDeploy settings, unused"):
        load_engine(tiny_model_path, backend="transformers", cache_max_entry_count=0.2, quant_policy=8).close()


def test_close_drops_the_model(tiny_model_path, dish):
    engine = load_engine(tiny_model_path, backend="transformers", max_dynamic_patch=1)
    assert engine.answer(dish.resize((900, 300)), "q", SHORT).output_tokens > 0
    model = weakref.ref(engine.model)
    engine.close()
    assert model() is None  # nothing else holds the weights: their memory is free
    with pytest.raises(RuntimeError, match="closed"):
        engine.answer(dish, "q", SHORT)


def test_recorded_gpu_figures_are_the_benchmarks_one_tile_rows_latest_run_first(tmp_path):
    from course_utils.engines.measure import read_recorded_throughput

    rows, note = read_recorded_throughput(tmp_path / "missing.json")
    assert rows == [] and "does not exist" in note

    def row(kind, per_s, run=1, **extra):
        return {"row": kind, "requests_per_s": per_s, "request_set": "one_tile", "batch_size": 32, "run": run, **extra}

    setup = {"device": "NVIDIA H100 80GB HBM3", "official_code_recorded": {"chat": 0.59, "batch_chat": 17.3}}
    results = {"setup": setup, "results": [
        row("chat", 3.4, code="after", attention="sdpa", batch_size=1),
        row("batch_chat", 42.1, code="after", attention="sdpa", batch_size=16),  # not the 32 of the chart
        row("batch_chat", 65.7, code="after", attention="sdpa"),
        row("batch_chat", 12.6, code="before", attention="sdpa"),  # the code before the fix: README only
        {**row("batch_chat", 12.8, code="after", attention="sdpa"), "request_set": "photo_13_tiles"},
        row("lmdeploy", 29.7, knobs="defaults", run=3),
        row("lmdeploy", 25.1, knobs="defaults", run=2),  # listed after, but an earlier run
        row("lmdeploy", 43.4, knobs="prefill every 4 steps", run=3),  # a sweep's set: README only
        row("engine", 56.3, code="transformers engine", run=2),
        {"row": "lmdeploy", "knobs": "lesson 02's knobs", "error": "CUDA out of memory"}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rows, note = read_recorded_throughput(tmp_path / "results.json")
    assert {row["label"]: row["requests_per_s"] for row in rows} == {
        "official code: chat(), one at a time": 0.59, "official code: batch_chat of 32": 17.3,
        "course code: chat(), one at a time": 3.4, "course code: batch_chat of 32": 65.7,
        "LMDeploy pipeline, its defaults: batch of 32": 29.7, "transformers engine: answer_batch of 32": 56.3}
    assert "NVIDIA H100 80GB HBM3" in note and "not measured here" in note


def test_dish_requests_are_foodieqa_photos_with_their_questions(session_run_dir):
    from course_utils.engines.measure import dish_requests

    requests = dish_requests(count=3)
    assert len(requests) == 3 and all(path.is_file() for path, _ in requests)
    assert all("（A)" in question for _, question in requests)  # multiple choice, as lesson 03 prompts


def test_a_cancelled_stream_stops_at_the_next_decoding_step(engine):
    """What the server relies on when a client leaves: after ``cancel()`` the model writes at most the token of the
    step already under way, and closing the pieces early stops the generation too."""
    settings = GenerationSettings(max_new_tokens=4000)
    streamer = engine.answer_streamer()
    pieces = engine.stream_turn(engine.turn(None, "你好", None), settings, None, streamer)
    next(pieces)
    streamer.cancel()
    written = streamer.new_tokens
    list(pieces)  # the stream ends by itself, with no error
    assert written <= streamer.new_tokens <= written + 1 < 4000 and not streamer.ended
    closed = engine.answer_streamer()
    pieces = engine.stream_turn(engine.turn(None, "你好", None), settings, None, closed)
    next(pieces)
    pieces.close()  # returns once the generation has stopped
    written = closed.new_tokens
    assert written < 4000 and closed.cancelled.is_set()
    assert engine.answer(None, "你好", SHORT).output_tokens == 10  # the model is free again


def test_a_whole_answer_is_counted_and_cancelled_without_decoding_its_text(engine):
    """The server's plain (unstreamed) requests: a streamer without text counts the tokens and can cancel."""
    from course_utils.chat import GenerationCancelled

    turn = engine.turn(None, "你好", None)
    counter = engine.answer_streamer(text=False)
    answer = engine.answer_turn(turn, SHORT, counter)
    assert counter.new_tokens == answer.output_tokens == 10 and counter.text is None
    assert answer.text == engine.answer(None, "你好", SHORT).text
    cancelled = engine.answer_streamer(text=False)
    cancelled.cancel()
    with pytest.raises(GenerationCancelled):
        engine.answer_turn(turn, GenerationSettings(max_new_tokens=4000), cancelled)
