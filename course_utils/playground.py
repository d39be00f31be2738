"""Lesson 06's playground: ask the base and the fine-tuned InternVL2 about a dish, side by side, as they write.

Two layers, read top to bottom:

* **Plain functions and one class per answer pane**, tested without a browser: :func:`open_image` (an upload,
  a path or a PIL image, with bad input reported in one line), :func:`read_model_info` (is this folder an
  InternVL2 model?), :func:`tile_preview` (image -> grid, tiles, image tokens), :func:`find_model_folders` and
  :func:`held_out_gallery` (what to choose from), and :class:`ModelSide` (question + settings -> streamed pieces,
  with the side's multi-turn history, time and tokens/s).
* :class:`Playground`: the ipywidgets 8 controls around them. Its Ask button calls the same :meth:`Playground.ask`
  a notebook or a test calls; the answers are written by one worker thread, so the kernel stays free and a
  second Ask while one is streaming is refused instead of interleaved.

Models go through the engine interface (:func:`course_utils.engines.load_engine`): LMDeploy on a GPU, the course's
transformers engine otherwise. Each side loads its model once and keeps it until another folder is chosen.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, ImageDraw

from .engines import GenerationSettings, choose_backend, load_engine
from .paths import run_dir

MAX_TILES = 12  # the slider's top: InternVL2's published max_dynamic_patch
MAX_IMAGE_SIDE = 4096  # larger pictures are shrunk before tiling: the tiles look the same, the memory is saved
MAX_IMAGE_PIXELS = 64_000_000  # above this an upload is refused before it is decoded (a 64 Mpx RGB image is 192 MB)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
# Names of folders being written (staging), never models a learner should pick (the course's own start with ".").
SKIPPED_FOLDER_MARKERS = (".building", ".staging", ".incomplete", ".partial", ".tmp")
SIDES = ("base", "finetuned")
SIDE_TITLES = {"base": "Base model", "finetuned": "Fine-tuned model"}
FINETUNE_HINT = (
    "No fine-tuned model yet. Lesson 04 fine-tunes the base model with XTuner and lesson 05 converts its "
    "checkpoint into a model folder in the run directory; run them, then press 'Find models' (or choose any "
    "InternVL2 folder in this pane's list)."
)
DESCRIBE_QUESTION = "描述这张图片。"  # what the tiny base was pretrained to answer
PRESET_QUESTIONS = (
    DESCRIBE_QUESTION,
    "图片中的食物通常属于哪个菜系？",
    "这道菜的主要食材是什么？",
    "Which cuisine does the food in the image belong to?",
    "What is the main ingredient of this dish?",
    "Describe the image.",
)
# The share of the free GPU memory both LMDeploy engines' KV caches take together, half each. LMDeploy's default
# 0.8 for one engine leaves no room for its CUDA graphs (lesson 05); two models in one kernel need less still.
LMDEPLOY_CACHE_SHARE = 0.4


class PlaygroundError(ValueError):
    """Bad input (a file that is not an image, a folder that is not a model, ...): one line for the pane."""


# ---------------------------------------------------------------------------------------------------------------
# Images and tiles


def open_image(source) -> tuple[Image.Image, str]:
    """An upload's bytes, an image path or a PIL image as an RGB image, and a note when it had to be shrunk.

    Refused with :class:`PlaygroundError`: what is not an image, and pictures over ``MAX_IMAGE_PIXELS`` (checked
    from the header, before decoding). Pictures with a side over ``MAX_IMAGE_SIDE`` are shrunk, keeping the aspect.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        name = "the upload" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
        try:
            image = Image.open(io.BytesIO(source) if name == "the upload" else source)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise PlaygroundError(
                    f"{name} is {image.width}x{image.height} pixels, more than the playground opens "
                    f"({MAX_IMAGE_PIXELS // 1_000_000} Mpx): shrink it first"
                )
            image.load()
        except FileNotFoundError:
            raise PlaygroundError(f"{name} does not exist") from None
        except Image.DecompressionBombError:
            raise PlaygroundError(f"{name} is far larger than the playground opens: shrink it first") from None
        except (OSError, SyntaxError) as error:
            raise PlaygroundError(f"{name} is not an image PIL can read ({error}); use a JPEG, PNG or WebP picture") from None
    note = ""
    if max(image.size) > MAX_IMAGE_SIDE:
        original = image.size
        image = image.copy()
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        note = f"shrunk from {original[0]}x{original[1]} to {image.width}x{image.height}"
    return image.convert("RGB"), note


@dataclass(frozen=True)
class ModelInfo:
    """What the playground needs to know about a model folder without loading it."""

    path: Path
    image_size: int  # side of one tile in pixels
    tokens_per_tile: int  # LLM tokens each tile becomes
    max_tiles: int  # the model's own max_dynamic_patch
    min_tiles: int
    use_thumbnail: bool


def read_model_info(path: str | Path) -> ModelInfo:
    """The tiling facts of an InternVL2 folder; :class:`PlaygroundError` saying why when it is not one."""
    from .internvl import InternVLChatConfig

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PlaygroundError(f"{folder} is not a folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise PlaygroundError(f"{folder} is not an InternVL2 model folder: it has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PlaygroundError(f"{config_file} is not valid JSON ({error})") from None
    if config.get("model_type") != InternVLChatConfig.model_type:
        raise PlaygroundError(
            f"{folder} holds a {config.get('model_type')!r} model, not InternVL2 "
            f"(config.json model_type {InternVLChatConfig.model_type!r})"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise PlaygroundError(f"{folder} has an InternVL2 config.json but no weights (*.safetensors or *.bin)")
    try:
        parsed = InternVLChatConfig.from_dict(config)
    except (KeyError, TypeError, ValueError) as error:
        raise PlaygroundError(f"{config_file} is not a complete InternVL2 config ({error})") from None
    return ModelInfo(
        path=folder.resolve(),
        image_size=parsed.image_size,
        tokens_per_tile=parsed.num_image_token,
        max_tiles=parsed.max_dynamic_patch,
        min_tiles=parsed.min_dynamic_patch,
        use_thumbnail=parsed.use_thumbnail,
    )


@dataclass(frozen=True)
class TilePreview:
    """How one image is tiled for one model: the grid, the tiles (thumbnail included) and the image tokens."""

    width: int
    height: int
    columns: int
    rows: int
    tiles: int
    image_tokens: int
    max_tiles: int
    note: str = ""

    def summary(self) -> str:
        thumbnail = " + thumbnail" if self.tiles > self.columns * self.rows else ""
        text = (f"{self.width}x{self.height} -> {self.columns}x{self.rows} grid{thumbnail} = {self.tiles} tiles "
                f"(max {self.max_tiles}) -> {self.image_tokens} image tokens")
        return f"{text}; {self.note}" if self.note else text


def tile_preview(image: Image.Image, info: ModelInfo, max_tiles: int, note: str = "") -> TilePreview:
    """The tiling ``info``'s model gives ``image`` with at most ``max_tiles`` tiles (clamped to 1..MAX_TILES)."""
    from .internvl.preprocessing import choose_grid, count_tiles

    max_tiles = min(max(int(max_tiles), info.min_tiles, 1), MAX_TILES)
    columns, rows = choose_grid(image.width, image.height, info.min_tiles, max_tiles, info.image_size)
    tiles = count_tiles(image.width, image.height, info.min_tiles, max_tiles, info.image_size, info.use_thumbnail)
    return TilePreview(image.width, image.height, columns, rows, tiles, tiles * info.tokens_per_tile, max_tiles, note)


def draw_tile_grid(image: Image.Image, preview: TilePreview, side: int = 240) -> bytes:
    """A small PNG of the image with the tile grid drawn over it (for the preview widget)."""
    shown = image.copy()
    shown.thumbnail((side, side))
    draw = ImageDraw.Draw(shown)
    for c in range(1, preview.columns):
        x = c * shown.width / preview.columns
        draw.line([(x, 0), (x, shown.height)], fill=(255, 220, 0), width=2)
    for r in range(1, preview.rows):
        y = r * shown.height / preview.rows
        draw.line([(0, y), (shown.width, y)], fill=(255, 220, 0), width=2)
    buffer = io.BytesIO()
    shown.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# What to choose from: model folders and the held-out gallery


def _is_skipped_folder(name: str) -> bool:
    return name.startswith(".") or any(marker in name for marker in SKIPPED_FOLDER_MARKERS)


def find_model_folders(root: str | Path | None = None, max_depth: int = 4) -> list[Path]:
    """InternVL2 model folders under the run directory (the base model, lesson 05's converted ones), newest first.

    Folders being written (staging names) and the data folder are skipped; a folder counts once its
    ``config.json`` says ``internvl_chat`` and its weights are there (see :func:`read_model_info`).
    """
    root = Path(root) if root is not None else run_dir()
    found = []
    for folder, subfolders, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        subfolders[:] = [] if depth >= max_depth else [
            name for name in subfolders if not _is_skipped_folder(name) and not (depth == 0 and name == "data")
        ]
        if "config.json" in files:
            try:
                found.append(read_model_info(folder).path)
            except PlaygroundError:
                pass  # another kind of folder with a config.json (a tokenizer, an XTuner work dir)
    return sorted(found, key=lambda path: (path / "config.json").stat().st_mtime, reverse=True)


def find_finetuned_model(base: str | Path, root: str | Path | None = None) -> Path | None:
    """The newest converted model in the run directory: a folder with lesson 05's conversion record
    (``course-conversion.json``), one converted from ``base`` first; None when there is none yet."""
    from .training.convert import read_conversion

    base = Path(base).resolve()
    converted = [(path, record) for path in find_model_folders(root) if (record := read_conversion(path))]
    from_base = [path for path, record in converted if Path(record["base_model"]).resolve() == base]
    return next(iter(from_base or [path for path, _ in converted]), None)


def training_data_of(model: str | Path | None) -> Path | None:
    """The prepared data a converted model was fine-tuned on (conversion record -> checkpoint -> the run's
    ``course-finetune.json``), or None when the chain is not there."""
    from .training.convert import read_conversion
    from .training.launcher import MANIFEST_FILE

    record = read_conversion(model) if model else None
    run_manifest = Path(record["checkpoint"]).parent / MANIFEST_FILE if record else None
    if run_manifest is None or not run_manifest.is_file():
        return None
    prepared = json.loads(run_manifest.read_text(encoding="utf-8")).get("prepared_data")
    return Path(prepared) if prepared and (Path(prepared) / "manifest.json").is_file() else None


def model_choices(base: str | Path, extra=()) -> list[tuple[str, str]]:
    """Dropdown options (label, folder): ``base``, ``$MODEL_PATH``, the run directory's models, then ``extra``."""
    from .paths import env_path

    root = run_dir()
    candidates = [Path(base), *([Path(env_path("MODEL_PATH"))] if env_path("MODEL_PATH") else []),
                  *find_model_folders(root), *map(Path, extra)]
    options: dict[str, str] = {}
    for path in candidates:
        path = path.expanduser().resolve()
        label = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        options.setdefault(str(path), label)
    return [(label, path) for path, label in options.items()]


@dataclass(frozen=True)
class GalleryItem:
    """A picture to ask about, with the question the data asks about it (when it comes from FoodieQA)."""

    image: Path
    label: str
    question: str = ""


def held_out_manifest(finetuned: str | Path | None = None) -> tuple[dict, str]:
    """The prepared data whose held-out dishes the gallery shows, and a line saying which: the data ``finetuned``
    was trained on (its questions are in the style it learnt), else lesson 03's split as it is, else lesson 03's
    split prepared now with its defaults."""
    from .foodieqa import ensure_prepared_foodieqa, load_manifest, prepared_dir

    trained_on = training_data_of(finetuned)
    if trained_on is not None:
        return load_manifest(trained_on), f"held-out dishes of the data the fine-tuned model was trained on, {trained_on}"
    try:
        return load_manifest(), f"held-out dishes of lesson 03's split in {prepared_dir()}"
    except FileNotFoundError:
        manifest = ensure_prepared_foodieqa()
        return manifest, f"lesson 03 had not run: prepared its held-out split now, in {prepared_dir()}"


def held_out_gallery(manifest: dict | None = None, limit: int = 8) -> list[GalleryItem]:
    """One picture per held-out dish of lesson 03's split (``test.json``), with its question in the trained style."""
    from .foodieqa import load_manifest

    manifest = manifest or load_manifest()
    items = json.loads(Path(manifest["test_path"]).read_text(encoding="utf-8"))
    gallery: dict[str, GalleryItem] = {}
    for item in items:
        if item["food_id"] not in gallery and len(gallery) < limit:
            image = Path(manifest["image_folder"]) / item["image"]
            gallery[item["food_id"]] = GalleryItem(image, item["food_name"], item["prompt"])
    return list(gallery.values())


def folder_gallery(folder: str | Path, limit: int = 24) -> list[GalleryItem]:
    """The pictures in a folder the learner names (file name as label); :class:`PlaygroundError` when there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PlaygroundError(f"{folder} is not a folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not images:
        raise PlaygroundError(f"{folder} holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
    return [GalleryItem(path, path.stem) for path in images]


# ---------------------------------------------------------------------------------------------------------------
# One side: a model, its engine and its conversation


@dataclass
class AnswerStats:
    """How one answer went: wall time from the question to the last piece, tokens written, pieces streamed."""

    seconds: float
    tokens: int
    pieces: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.seconds:.2f} s · {self.tokens} tokens · {self.tokens_per_second:.1f} tokens/s · "
                f"streamed in {self.pieces} pieces")


def next_history(history: list[tuple[str, str]] | None, question: str, answer: str, with_image: bool):
    """The conversation after one more turn, in the model card's form: the image tag stays in the first question."""
    if not history and with_image and "<image>" not in question:
        question = "<image>\n" + question
    return [*(history or []), (question, answer)]


def lmdeploy_cache_share() -> float | None:
    """Each side's share of the free GPU memory for LMDeploy's KV cache (None where the engine is not LMDeploy)."""
    return LMDEPLOY_CACHE_SHARE / len(SIDES) if choose_backend()[0] != "transformers" else None


@dataclass
class ModelSide:
    """One answer pane's model: a folder, its engine (loaded on first use, once), and its conversation.

    ``load`` builds an engine: ``load(model_path, max_dynamic_patch=..., cache_max_entry_count=...)``; the engine
    streams with ``engine.stream(image, question, settings, history)`` (see :mod:`course_utils.engines`).
    """

    name: str
    load: Callable = load_engine
    cache_share: float | None = None  # this side's share of the GPU memory for LMDeploy's KV cache
    info: ModelInfo | None = None
    engine: object = None
    tokenizer: object = None
    engine_max_tiles: int | None = None
    history: list = field(default_factory=list)
    last_stats: AnswerStats | None = None

    def select(self, path: str | Path | None) -> ModelInfo | None:
        """Use the model in ``path`` (None: no model); a folder that is not InternVL2 raises and changes nothing."""
        info = read_model_info(path) if path is not None else None
        if info != self.info:
            self.close()
            self.info = info
            self.clear()
        return info

    def clear(self) -> None:
        """Forget the conversation (the model stays loaded)."""
        self.history = []

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = self.tokenizer = self.engine_max_tiles = None

    def ensure_loaded(self, max_tiles: int) -> bool:
        """Load the engine for ``max_tiles`` tiles per image; True when that meant (re)loading it."""
        if self.info is None:
            raise PlaygroundError(FINETUNE_HINT if self.name == "finetuned" else "choose a model folder for this pane")
        if self.engine is not None and self.engine_max_tiles == max_tiles:
            return False
        from transformers import AutoTokenizer

        self.close()  # tiles per image are fixed when an engine is made, so another maximum means a new engine
        options = {"max_dynamic_patch": max_tiles}
        if self.cache_share is not None:
            options["cache_max_entry_count"] = self.cache_share
        self.engine = self.load(self.info.path, **options)
        self.tokenizer = AutoTokenizer.from_pretrained(self.info.path, trust_remote_code=True)
        self.engine_max_tiles = max_tiles
        return True

    def ask(self, image: Image.Image | None, question: str, settings, max_tiles: int) -> Iterator[str]:
        """Stream the answer to ``question`` about ``image`` after this side's history, piece by piece.

        When the answer is complete it joins the history and :attr:`last_stats` says how long it took.
        """
        question = question.strip()
        if not question:
            raise PlaygroundError("type a question first")
        self.ensure_loaded(max_tiles)
        start = time.perf_counter()
        pieces: list[str] = []
        for piece in self.engine.stream(image, question, settings, history=self.history or None):
            pieces.append(piece)
            yield piece
        answer = "".join(pieces)
        # Counted by encoding the text again; text decoded from a token that ends mid-character (shown as U+FFFD)
        # encodes longer than it was written, and the model never writes more than max_new_tokens.
        tokens = min(len(self.tokenizer.encode(answer, add_special_tokens=False)), settings.max_new_tokens)
        self.last_stats = AnswerStats(time.perf_counter() - start, tokens, len(pieces))
        self.history = next_history(self.history, question, answer.strip(), image is not None)


# ---------------------------------------------------------------------------------------------------------------
# The widgets


def conversation_html(history, question: str | None = None, partial: str = "", message: str = "") -> str:
    """A pane's contents: the turns so far, the answer being written, and a one-line message (escaped)."""
    turns = [*[(q.replace("<image>\n", ""), a) for q, a in history], *([(question, partial)] if question else [])]
    parts = [f"<div class='course-turn'><b>Q:</b> {html.escape(q)}<br><b>A:</b> {html.escape(a)}</div>"
             for q, a in turns]
    if message:
        parts.append(f"<div class='course-message'><i>{html.escape(message)}</i></div>")
    return "<div style='white-space: pre-wrap; line-height: 1.4; min-height: 8em'>" + "".join(parts) + "</div>"


class Playground:
    """The playground's widgets; ``display(playground.widget)`` shows them, ``ask()`` is what the Ask button does.

    ``base`` and ``finetuned`` are model folders (``finetuned`` None: the pane says how to make one). ``gallery``
    lists pictures to pick. ``load`` and ``make_settings`` default to the course's engine interface.
    """

    def __init__(self, base: str | Path, finetuned: str | Path | None = None, gallery=(), *,
                 load: Callable = load_engine, make_settings: Callable = GenerationSettings):
        import ipywidgets as w

        self.make_settings = make_settings
        share = lmdeploy_cache_share()
        self.sides = {name: ModelSide(name, load=load, cache_share=share) for name in SIDES}
        self.image: Image.Image | None = None
        self.image_note = ""
        self.last_preview: TilePreview | None = None
        self.gallery_items: list[GalleryItem] = list(gallery)
        self._busy = threading.Lock()
        self._worker: threading.Thread | None = None

        # Picture: upload, gallery, a folder of one's own; the tiling preview.
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.upload.observe(self._on_upload, names="value")
        self.gallery_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.folder = w.Text(placeholder="a folder of pictures", layout=w.Layout(width="18em"))
        self.folder_button = w.Button(description="Show folder")
        self.folder_button.on_click(lambda _: self._guarded(self._show_folder))
        self.preview_image = w.Image(format="png", layout=w.Layout(max_width="240px"))
        self.preview_text = w.HTML("<i>pick a picture</i>")
        self.preview_text.add_class("course-playground-tiles")

        # Question and settings.
        self.question = w.Textarea(placeholder="Ask about the picture", layout=w.Layout(width="100%", height="5em"))
        self.presets = w.Dropdown(options=[("(preset questions)", ""), *[(q, q) for q in PRESET_QUESTIONS]],
                                  layout=w.Layout(width="100%"))
        self.presets.observe(self._on_preset, names="value")
        label = {"style": {"description_width": "9em"}}
        self.max_new_tokens = w.IntSlider(64, min=1, max=1024, description="max new tokens", **label)
        self.temperature = w.FloatSlider(0.0, min=0.0, max=1.5, step=0.05, description="temperature", **label)
        self.top_p = w.FloatSlider(1.0, min=0.05, max=1.0, step=0.05, description="top-p", **label)
        self.max_tiles = w.IntSlider(6, min=1, max=MAX_TILES, description="max tiles", **label)
        self.max_tiles.observe(lambda _: self._guarded(self._update_preview), names="value")
        self.ask_button = w.Button(description="Ask", button_style="primary", icon="paper-plane")
        self.ask_button.add_class("course-playground-ask")
        self.ask_button.on_click(lambda _: self.ask())
        self.clear_button = w.Button(description="Clear", icon="eraser")
        self.clear_button.add_class("course-playground-clear")
        self.clear_button.on_click(lambda _: self.clear())
        self.find_button = w.Button(description="Find models", icon="refresh")
        self.find_button.on_click(lambda _: self.refresh_models())
        self.status = w.HTML()
        self.status.add_class("course-playground-status")

        # Two panes: a model list, the conversation, the last answer's time and speed.
        self.model_lists, self.answers, self.stats = {}, {}, {}
        panes = []
        for name in SIDES:
            self.model_lists[name] = w.Dropdown(description="model", layout=w.Layout(width="100%"))
            self.model_lists[name].observe(lambda change, name=name: self._on_model(name, change["new"]), names="value")
            self.answers[name] = w.HTML(conversation_html([]))
            self.answers[name].add_class(f"course-playground-answer-{name}")
            self.stats[name] = w.HTML()
            self.stats[name].add_class(f"course-playground-stats-{name}")
            panes.append(w.VBox([w.HTML(f"<b>{SIDE_TITLES[name]}</b>"), self.model_lists[name],
                                 self.answers[name], self.stats[name]],
                                layout=w.Layout(width="50%", border="1px solid #ccc", padding="4px")))

        self._extra_models: list[str] = []
        self.base_path = Path(base).expanduser().resolve()
        self.refresh_models(finetuned)
        # Tiles as the fine-tuned model was trained with (its config keeps them), so both sides see what it saw.
        reference = self.sides["finetuned"].info or self.sides["base"].info
        if reference is not None:
            self.max_tiles.value = min(reference.max_tiles, MAX_TILES)
        self.show_gallery(self.gallery_items)

        picture = w.VBox([w.HBox([self.upload, self.folder, self.folder_button]), self.gallery_box,
                          w.HBox([self.preview_image, self.preview_text])])
        settings = w.VBox([self.max_new_tokens, self.temperature, self.top_p, self.max_tiles])
        self.widget = w.VBox([
            picture, self.presets, self.question, settings,
            w.HBox([self.ask_button, self.clear_button, self.find_button]), self.status, w.HBox(panes),
        ])
        self.widget.add_class("course-playground")

    # Models ------------------------------------------------------------------------------------------------------

    def refresh_models(self, finetuned: str | Path | None = None) -> None:
        """List the model folders again (a model converted since is found); each side keeps the model it uses,
        and a fine-tuned side without one takes ``finetuned`` or the newest converted model."""
        in_use = {name: side.info.path if side.info else None for name, side in self.sides.items()}
        finetuned = finetuned or in_use["finetuned"] or find_finetuned_model(self.base_path)
        base = in_use["base"] or self.base_path
        extra = [*self._extra_models, str(base), *([finetuned] if finetuned else [])]
        options = model_choices(self.base_path, extra)
        wanted = {"base": str(base), "finetuned": str(Path(finetuned).resolve()) if finetuned else None}
        for name in SIDES:
            dropdown = self.model_lists[name]
            dropdown.options = [*([("(none yet)", None)] if name == "finetuned" else []), *options]
            dropdown.value = wanted[name]
            self._on_model(name, dropdown.value)

    def add_model_folder(self, path: str | Path, side: str = "finetuned") -> None:
        """Offer any InternVL2 folder in the lists and select it for ``side`` (a bad folder: message in that pane)."""
        try:
            info = read_model_info(path)
        except PlaygroundError as error:
            self._show(side, message=str(error))
            return
        self._extra_models.append(str(info.path))
        current = {name: self.model_lists[name].value for name in SIDES}
        for name in SIDES:
            self.model_lists[name].options = [*([("(none yet)", None)] if name == "finetuned" else []),
                                              *model_choices(self.base_path, self._extra_models)]
            self.model_lists[name].value = str(info.path) if name == side else current[name]

    def _on_model(self, side: str, path) -> None:
        if self._refused_while_answering("switch models"):
            current = self.sides[side].info
            self.model_lists[side].value = str(current.path) if current else None  # the list shows the model in use
            return
        try:
            self.sides[side].select(path)
        except PlaygroundError as error:
            self._show(side, message=f"{error}; keeping the previous model")
            return
        self._show(side, message="" if path else FINETUNE_HINT)
        if side == "base":
            self._guarded(self._update_preview)

    # Pictures ----------------------------------------------------------------------------------------------------

    def show_gallery(self, items) -> None:
        """Show ``items`` as thumbnails with a button each; clicking one picks it (and its question)."""
        import ipywidgets as w

        self.gallery_items = list(items)
        cells = []
        for index, item in enumerate(self.gallery_items):
            thumbnail, _ = open_image(item.image)
            thumbnail.thumbnail((96, 96))
            buffer = io.BytesIO()
            thumbnail.save(buffer, format="PNG")
            button = w.Button(description=item.label[:14], tooltip=item.label, layout=w.Layout(width="100px"))
            button.add_class("course-playground-gallery-item")
            button.on_click(lambda _, index=index: self._guarded(self.pick_gallery, index))
            cells.append(w.VBox([w.Image(value=buffer.getvalue(), format="png"), button]))
        self.gallery_box.children = cells

    def pick_gallery(self, index: int) -> None:
        """Pick gallery picture ``index``; its held-out question, if any, becomes the question."""
        item = self.gallery_items[index]
        self.pick_image(item.image)
        if item.question:
            self.presets.options = [("(preset questions)", ""), (f"this dish's question: {item.question[:40]}", item.question),
                                    *[(q, q) for q in PRESET_QUESTIONS]]
            self.question.value = item.question

    def pick_image(self, source) -> None:
        """Use an image (path, bytes or PIL); a new picture starts new conversations. Bad input: PlaygroundError."""
        if self._refused_while_answering("pick a picture"):
            return
        self.image, self.image_note = open_image(source)
        for name, side in self.sides.items():
            side.clear()
            self._show(name)
            self.stats[name].value = ""
        self._update_preview()

    def _show_folder(self) -> None:
        self.show_gallery(folder_gallery(self.folder.value.strip()))

    def _on_upload(self, change) -> None:
        if change["new"]:
            self._guarded(self.pick_image, change["new"][0]["content"].tobytes())

    def _update_preview(self) -> None:
        info = self.sides["base"].info
        if self.image is None or info is None:
            return
        preview = tile_preview(self.image, info, self.max_tiles.value, self.image_note)
        self.preview_image.value = draw_tile_grid(self.image, preview)
        self.preview_text.value = html.escape(preview.summary())
        self.last_preview = preview

    def _on_preset(self, change) -> None:
        if change["new"]:
            self.question.value = change["new"]

    # Asking ------------------------------------------------------------------------------------------------------

    def ask(self, wait: bool = False) -> bool:
        """Ask both sides the question about the picture; False (and a message) when an answer is still streaming.

        The answers are written by a worker thread, base first, then fine-tuned; ``wait=True`` returns when done.
        """
        if not self._busy.acquire(blocking=False):
            self._refused_while_answering("ask again")
            return False
        question = self.question.value
        values = dict(max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value,
                      top_p=self.top_p.value)
        self._lock_controls(True)
        self.status.value = "<i>answering...</i>"
        self._worker = threading.Thread(target=self._answer_both, daemon=True,
                                        args=(self.image, question, values, self.max_tiles.value))
        self._worker.start()
        if wait:
            self.wait()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the answers being written are complete."""
        if self._worker is not None:
            self._worker.join(timeout)

    def clear(self) -> bool:
        """Forget both conversations (refused while answering)."""
        if self._refused_while_answering("clear"):
            return False
        for name, side in self.sides.items():
            side.clear()
            self._show(name)
            self.stats[name].value = ""
        self.status.value = ""
        return True

    def _refused_while_answering(self, action: str) -> bool:
        """True, with a message, while answers are streaming: nothing may change under them."""
        if self._busy.locked():
            self.status.value = f"<i>Still answering: {action} when both answers are complete.</i>"
            return True
        return False

    def _lock_controls(self, locked: bool) -> None:
        """Disable what would change the models, the picture or the conversations while answers stream."""
        gallery_buttons = [cell.children[1] for cell in self.gallery_box.children]
        for control in (self.ask_button, self.clear_button, self.find_button, self.upload, self.folder_button,
                        *self.model_lists.values(), *gallery_buttons):
            control.disabled = locked

    def _answer_both(self, image, question: str, values: dict, max_tiles: int) -> None:
        try:
            if not question.strip():
                for name in SIDES:
                    self._show(name, message="Type a question first (or pick a preset one).")
                return
            try:
                settings = self.make_settings(**values)
            except ValueError as error:
                for name in SIDES:
                    self._show(name, message=str(error))
                return
            for name in SIDES:
                self._answer_one(name, image, question.strip(), settings, max_tiles)
        finally:
            self.status.value = ""
            self._lock_controls(False)
            self._busy.release()

    def _answer_one(self, name: str, image, question: str, settings, max_tiles: int) -> None:
        side = self.sides[name]
        self.stats[name].value = ""
        history = list(side.history)
        if side.info is None:
            self._show(name, message=FINETUNE_HINT if name == "finetuned" else "choose a model folder")
            return
        partial = ""
        try:
            if side.engine is None or side.engine_max_tiles != max_tiles:
                self._show(name, question=question, message=f"loading {side.info.path.name} ...")
            for piece in side.ask(image, question, settings, max_tiles):
                partial += piece
                self._show(name, question=question, partial=partial)
        except Exception as error:  # the pane shows one line, the notebook never a traceback
            message = str(error) if isinstance(error, PlaygroundError) else f"{type(error).__name__}: {error}"
            self._show(name, history=history, message=message)
            return
        self._show(name)
        self.stats[name].value = html.escape(side.last_stats.summary())

    def pane_text(self, side: str) -> str:
        """What a pane shows, as plain text."""
        lines = re.sub(r"<[^>]+>", "", re.sub(r"<br>|</div>", "\n", self.answers[side].value))  # text is escaped
        return "\n".join(line for line in html.unescape(lines).splitlines() if line.strip())

    def _show(self, name: str, question: str | None = None, partial: str = "", message: str = "", history=None):
        history = self.sides[name].history if history is None else history
        self.answers[name].value = conversation_html(history, question, partial, message)

    def _guarded(self, action: Callable, *args) -> None:
        """Run a control's action; bad input becomes a message in both panes instead of a traceback."""
        try:
            action(*args)
        except PlaygroundError as error:
            for name in SIDES:
                self._show(name, message=str(error))

    def close(self) -> None:
        """Free both models."""
        self.wait()
        for side in self.sides.values():
            side.close()
