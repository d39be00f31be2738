"""Lesson 06's playground, headless: the plain callbacks on the tiny model, the widgets, and every bad input."""

from __future__ import annotations

import html
import io
import json
import shutil
import struct
import threading
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from course_utils import playground as pg
from course_utils.chat import image_pixel_values
from course_utils.engines import GenerationSettings, load_engine

GREEDY = GenerationSettings(max_new_tokens=12)
LOADS = []  # every engine the playground loaded in this module, to check it loads each model once


def load_transformers(model_path, **options):
    """The course's transformers engine (what ``backend="auto"`` picks without a GPU), counted."""
    engine = load_engine(model_path, backend="transformers", **options)
    LOADS.append(engine)
    return engine


class WrappedEngine:
    """The transformers engine, for tests that change how it streams."""

    def __init__(self, model_path, **options):
        self.engine = load_transformers(model_path, **options)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def dish(color=(200, 60, 40), size=(320, 240)) -> Image.Image:
    return Image.new("RGB", size, color)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (a decompression bomb's first bytes)."""
    data = bytearray(png_bytes(Image.new("RGB", (8, 8))))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


@dataclass
class Tiny:
    """The tiny model as the tests load it themselves, to compute what the playground should show."""

    model_path: Path
    model: object
    tokenizer: object

    def chat(self, image, question, settings=GREEDY, max_tiles=6, history=None, return_history=False):
        pixels = image_pixel_values(self.model, image, max_tiles)
        config = dict(max_new_tokens=settings.max_new_tokens, do_sample=False)
        return self.model.chat(self.tokenizer, pixels, question, config, history=history, return_history=return_history)


@pytest.fixture(scope="module")
def tiny(tiny_model_path, tiny_model_and_tokenizer):
    return Tiny(Path(tiny_model_path), *tiny_model_and_tokenizer)


@pytest.fixture(scope="module")
def second_model_path(tmp_path_factory) -> Path:
    """Another InternVL2 folder (other random weights), as a learner's second model."""
    from course_utils.tiny_model import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("models") / "other-internvl2", seed=1)


@pytest.fixture(scope="module")
def gallery(session_run_dir):
    from course_utils.foodieqa import ensure_prepared_foodieqa

    return pg.held_out_gallery(ensure_prepared_foodieqa(), limit=3)


def make_playground(base, finetuned=None, gallery=(), load=load_transformers):
    return pg.Playground(base, finetuned, gallery, load=load)


def answer_text(playground, side) -> str:
    return playground.answers[side].value


# ---- images and tiles -------------------------------------------------------------------------------------------


def test_open_image_reads_bytes_paths_and_pil_images(tmp_path):
    path = tmp_path / "dish.png"
    dish().save(path)
    for source in (png_bytes(dish()), path, str(path), dish().convert("RGBA")):
        image, note = pg.open_image(source)
        assert (image.mode, image.size, note) == ("RGB", (320, 240), "")


@pytest.mark.parametrize("content", [b"", b"%PDF-1.4 not a picture", b"\x89PNG\r\n\x1a\n truncated"])
def test_an_upload_that_is_not_an_image_is_one_clear_error(content):
    with pytest.raises(pg.PlaygroundError, match="the upload is not an image"):
        pg.open_image(content)


def test_a_missing_picture_is_named(tmp_path):
    with pytest.raises(pg.PlaygroundError, match="does not exist"):
        pg.open_image(tmp_path / "gone.jpg")


def test_a_huge_picture_is_refused_from_its_header_before_decoding():
    with pytest.raises(pg.PlaygroundError, match="9000x8000 pixels, more than the playground opens"):
        pg.open_image(png_claiming_size(9000, 8000))
    with pytest.raises(pg.PlaygroundError, match="far larger than the playground opens"):
        pg.open_image(png_claiming_size(20000, 20000))  # PIL's own decompression-bomb limit


def test_a_large_picture_is_shrunk_and_its_tiles_capped(tiny):
    image, note = pg.open_image(png_bytes(Image.new("RGB", (6000, 1500), (10, 120, 30))))
    assert image.size == (4096, 1024) and note == "shrunk from 6000x1500 to 4096x1024"
    info = pg.read_model_info(tiny.model_path)
    for max_tiles in (1, 6, 12, 40):
        preview = pg.tile_preview(image, info, max_tiles, note)
        assert preview.max_tiles == min(max_tiles, pg.MAX_TILES)
        assert preview.tiles <= preview.max_tiles + 1  # the thumbnail comes on top of the grid
        assert note in preview.summary()


@pytest.mark.parametrize("size", [(320, 240), (224, 224), (900, 200), (200, 700), (6000, 1500)])
@pytest.mark.parametrize("max_tiles", [1, 4, 6])
def test_the_tile_preview_counts_what_the_model_is_given(tiny, size, max_tiles):
    info = pg.read_model_info(tiny.model_path)
    image = Image.new("RGB", size)
    preview = pg.tile_preview(image, info, max_tiles)
    tiles = image_pixel_values(tiny.model, image, max_tiles)
    assert preview.tiles == tiles.shape[0]
    assert preview.image_tokens == tiles.shape[0] * tiny.model.num_image_token
    grid = Image.open(io.BytesIO(pg.draw_tile_grid(image, preview)))
    assert max(grid.size) <= 240


# ---- model folders ----------------------------------------------------------------------------------------------


def test_read_model_info_knows_the_tiny_model(tiny):
    info = pg.read_model_info(tiny.model_path)
    assert (info.image_size, info.tokens_per_tile) == (tiny.model.config.force_image_size, tiny.model.num_image_token)
    assert info.max_tiles == tiny.model.config.max_dynamic_patch


def test_a_folder_that_is_not_an_internvl2_model_says_why(tmp_path, tiny_model_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    shutil.copytree(tiny_model_path, tmp_path / "no-weights", ignore=shutil.ignore_patterns("*.safetensors"))
    expected = {
        tmp_path / "missing": "is not a folder",
        tmp_path / "empty": "has no config.json",
        tmp_path / "llama": "holds a 'llama' model, not InternVL2",
        tmp_path / "broken": "is not valid JSON",
        tmp_path / "no-weights": "no weights",
    }
    for folder, message in expected.items():
        with pytest.raises(pg.PlaygroundError, match=message):
            pg.read_model_info(folder)


def converted_copy(model: Path, out: Path, base: Path, checkpoint: Path) -> Path:
    """A copy of ``model`` with the conversion record lesson 05 writes (``convert_checkpoint``'s fields we read)."""
    from course_utils.training.convert import CONVERSION_FILE

    shutil.copytree(model, out)
    (out / CONVERSION_FILE).write_text(json.dumps({"checkpoint": str(checkpoint), "base_model": str(base)}))
    return out.resolve()


def test_the_converted_model_is_found_by_its_conversion_record(tmp_path, tiny_model_path):
    base = shutil.copytree(tiny_model_path, tmp_path / "models" / "tiny-internvl2")
    plain = shutil.copytree(tiny_model_path, tmp_path / "models" / "a-learners-copy")  # no record: not fine-tuned
    assert pg.find_finetuned_model(base, tmp_path) is None
    run = tmp_path / "finetune" / "smoke"
    of_other_base = converted_copy(tiny_model_path, run / "of-another-base", tmp_path / "elsewhere", run / "iter_1.pth")
    assert pg.find_finetuned_model(base, tmp_path) == of_other_base  # better than nothing
    converted = converted_copy(tiny_model_path, run / "converted", base, run / "iter_2.pth")
    converted_copy(tiny_model_path, run / ".converted.staging-1", base, run / "iter_3.pth")  # being written
    shutil.copytree(tiny_model_path, tmp_path / "data" / "a-model-among-the-data")
    assert set(pg.find_model_folders(tmp_path)) == {base.resolve(), plain.resolve(), of_other_base, converted}
    assert pg.find_finetuned_model(base, tmp_path) == converted


def test_the_gallery_comes_from_the_data_the_finetuned_model_was_trained_on(tmp_path, tiny_model_path, gallery):
    from course_utils.foodieqa import prepared_dir
    from course_utils.training.launcher import MANIFEST_FILE

    run = tmp_path / "finetune" / "smoke"
    converted = converted_copy(tiny_model_path, run / "converted", tiny_model_path, run / "iter_2.pth")
    assert pg.training_data_of(converted) is None  # the run's manifest is not there
    manifest, source = pg.held_out_manifest(converted)
    assert source.startswith("held-out dishes of lesson 03's split")
    trained_on = shutil.copytree(prepared_dir(), tmp_path / "data" / "smoke-xtuner")
    (run / MANIFEST_FILE).write_text(json.dumps({"prepared_data": str(trained_on)}))
    manifest, source = pg.held_out_manifest(converted)
    assert pg.training_data_of(converted) == trained_on and "the fine-tuned model was trained on" in source
    assert Path(manifest["test_path"]) == trained_on.resolve() / "test.json"
    assert [item.label for item in pg.held_out_gallery(manifest, limit=3)] == [item.label for item in gallery]


# ---- one side: question + settings -> streamed pieces -----------------------------------------------------------


def test_a_side_streams_the_models_answer_and_keeps_the_conversation(tiny):
    side = pg.ModelSide("base", load=load_transformers)
    side.select(tiny.model_path)
    image = dish()
    first = list(side.ask(image, "这道菜属于哪个菜系？", GREEDY, max_tiles=6))
    assert len(first) > 1  # streamed, not returned at once
    expected, history = tiny.chat(image, "这道菜属于哪个菜系？", return_history=True)
    assert "".join(first).strip() == expected and side.history == history
    stats = side.last_stats
    assert stats.pieces == len(first) and stats.tokens == min(len(tiny.tokenizer.encode("".join(first), add_special_tokens=False)), 12)
    assert stats.tokens_per_second == pytest.approx(stats.tokens / stats.seconds)

    second = "".join(side.ask(image, "What is the main ingredient?", GREEDY, max_tiles=6))
    assert second.strip() == tiny.chat(image, "What is the main ingredient?", history=history)
    assert len(side.history) == 2
    side.clear()
    assert side.history == [] and side.engine is not None  # the model stays loaded


def test_a_side_reloads_its_engine_only_for_another_tile_limit(tiny):
    side = pg.ModelSide("base", load=load_transformers)
    side.select(tiny.model_path)
    assert side.ensure_loaded(6) and not side.ensure_loaded(6)
    first = side.engine
    assert side.ensure_loaded(2) and first.model is None and side.engine.max_dynamic_patch == 2  # the old one freed


def test_a_side_refuses_an_empty_question_and_a_missing_model(tiny):
    side = pg.ModelSide("finetuned", load=load_transformers)
    with pytest.raises(pg.PlaygroundError, match="Lesson 04"):
        list(side.ask(dish(), "question", GREEDY, 6))
    side.select(tiny.model_path)
    with pytest.raises(pg.PlaygroundError, match="type a question"):
        list(side.ask(dish(), "  \n", GREEDY, 6))
    assert side.engine is None  # nothing was loaded for a question that was not asked


# ---- the widgets --------------------------------------------------------------------------------------------------


def test_the_playground_answers_a_gallery_dish_and_says_how_to_make_the_finetuned_model(tiny, gallery, monkeypatch,
                                                                                      tmp_path):
    monkeypatch.setenv("RUN_DIR", str(tmp_path))  # a run directory where lesson 05 has converted nothing yet
    playground = make_playground(tiny.model_path, None, gallery)
    assert len(playground.gallery_box.children) == len(gallery) == 3
    playground.gallery_box.children[1].children[1].click()  # the second dish's button
    assert playground.question.value == gallery[1].question
    assert playground.last_preview.tiles == image_pixel_values(tiny.model, Image.open(gallery[1].image)).shape[0]
    assert str(playground.last_preview.image_tokens) in playground.preview_text.value
    playground.ask_button.click()
    playground.wait()
    answer = playground.sides["base"].history[0][1]
    assert answer and html.escape(answer) in answer_text(playground, "base")
    assert "tokens/s" in playground.stats["base"].value
    assert playground.pane_text("finetuned") == pg.FINETUNE_HINT and playground.stats["finetuned"].value == ""
    assert playground.pane_text("base").startswith(f"Q: {gallery[1].question.splitlines()[0]}")
    assert not playground.ask_button.disabled


def test_two_models_answer_side_by_side_and_switch_without_reloading_the_other(tiny, second_model_path):
    playground = make_playground(tiny.model_path)
    playground.add_model_folder(second_model_path, side="finetuned")
    playground.pick_image(dish())
    playground.question.value = "这道菜的主要食材是什么？"
    loads = len(LOADS)
    assert playground.ask(wait=True) and len(LOADS) == loads + 2
    base_engine = playground.sides["base"].engine
    answers = {side: playground.sides[side].history[0][1] for side in pg.SIDES}
    assert answers["base"] != answers["finetuned"]  # two models, two answers
    playground.model_lists["finetuned"].value = str(Path(tiny.model_path).resolve())  # switch from the list
    playground.find_button.click()  # looking for new models keeps the ones in use
    assert playground.model_lists["finetuned"].value == str(Path(tiny.model_path).resolve())
    assert playground.ask(wait=True) and len(LOADS) == loads + 3  # only the switched side loaded a model
    assert playground.sides["base"].engine is base_engine and len(playground.sides["base"].history) == 2
    assert playground.sides["finetuned"].history[0][1] == answers["base"]  # same model, same greedy answer
    playground.clear()
    assert all(not side.history for side in playground.sides.values())


def test_a_second_ask_while_streaming_is_refused_not_interleaved(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("RUN_DIR", str(tmp_path))  # no converted model: the fine-tuned side starts empty
    release = threading.Event()

    class SlowEngine(WrappedEngine):
        def stream(self, image, question, settings=None, history=None):
            yield "first piece "
            release.wait(timeout=30)
            yield from self.engine.stream(image, question, settings, history)

    playground = make_playground(tiny.model_path, load=SlowEngine)
    playground.pick_image(dish())
    playground.question.value = "第一个问题"
    assert playground.ask()
    playground.question.value = "第二个问题"
    assert not playground.ask() and "Still answering" in playground.status.value
    assert playground.ask_button.disabled and playground.model_lists["base"].disabled and not playground.clear()
    streamed_image = playground.image
    playground.pick_image(dish((0, 0, 255)))  # nothing changes under a streaming answer
    playground.model_lists["finetuned"].value = str(Path(tiny.model_path).resolve())
    assert playground.image is streamed_image and playground.sides["finetuned"].info is None
    assert playground.model_lists["finetuned"].value is None and "switch models" in playground.status.value
    release.set()
    playground.wait()
    history = playground.sides["base"].history
    assert [q for q, _ in history] == ["<image>\n第一个问题"]
    assert "第二个问题" not in answer_text(playground, "base")
    assert not playground.ask_button.disabled and not playground.model_lists["base"].disabled


def test_bad_input_in_the_widgets_becomes_a_message_in_the_panes(tiny, tmp_path):
    class FailingEngine(WrappedEngine):
        def stream(self, image, question, settings=None, history=None):
            yield "half an answer"
            raise RuntimeError("CUDA out of memory")

    playground = make_playground(tiny.model_path, load=FailingEngine)
    playground.upload.value = ({"name": "notes.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello"),
                                "last_modified": datetime.now(timezone.utc)},)
    assert all("not an image" in answer_text(playground, side) for side in pg.SIDES)
    assert playground.image is None

    playground.question.value = "   "
    playground.ask(wait=True)
    assert all("Type a question first" in answer_text(playground, side) for side in pg.SIDES)

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    playground.add_model_folder(tmp_path, side="base")
    assert "not InternVL2" in answer_text(playground, "base")
    assert playground.sides["base"].info.path == Path(tiny.model_path).resolve()  # the previous model stays

    playground.folder.value = str(tmp_path)
    playground.folder_button.click()
    assert "holds no pictures" in answer_text(playground, "base")

    playground.pick_image(png_bytes(Image.new("RGB", (6000, 1500))))
    assert "shrunk from 6000x1500" in playground.preview_text.value
    playground.question.value = "这是什么？"
    playground.ask(wait=True)
    assert "RuntimeError: CUDA out of memory" in answer_text(playground, "base")
    assert playground.sides["base"].history == []  # a failed answer does not join the conversation
