"""Lesson 01 runs on the tiny base model, records the architecture's figures and shows the code it teaches."""

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from course_utils import architectures
from course_utils.internvl import InternVLChatConfig, InternVLChatModel, count_tiles, pixel_shuffle
from course_utils.internvl.preprocessing import choose_grid
from course_utils.tiny_model import build_config

OFFICIAL_2B = json.loads((Path(__file__).parent / "fixtures" / "oracle" / "internvl2_2b_state_dict.json").read_text())


LESSON = Path(__file__).parents[1] / "notebooks" / "01_architecture.ipynb"


def outputs_of(path):
    notebook = json.loads(path.read_text())
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


def query_connector_parameters(vision_width, llm_width, num_queries):
    """A one-layer query connector's parameters counted from its layers' shapes: the queries, the patches'
    LayerNorm, cross-attention (query, key, value and output projections with biases), and the feed-forward
    block (LayerNorm, two Linear layers)."""
    queries = num_queries * llm_width
    patch_norm = 2 * vision_width
    attention = (llm_width + 2 * vision_width) * llm_width + 3 * llm_width + llm_width * llm_width + llm_width
    feed_forward = 2 * llm_width + 2 * (llm_width * llm_width + llm_width)
    return queries + patch_norm + attention + feed_forward


def mlp1_parameters(vision_width, llm_width, downsample_ratio=0.5):
    """LayerNorm over the folded vector, Linear folded -> LLM width, GELU, Linear LLM width -> LLM width."""
    folded = vision_width * int(1 / downsample_ratio) ** 2
    return 2 * folded + folded * llm_width + llm_width + llm_width * llm_width + llm_width


def test_lesson_01_counts_the_internvl2_family(executed_notebook):
    _, figures = executed_notebook("01")
    assert figures["internvl2_2b_parts"] == {part: OFFICIAL_2B["parameters"][part] for part in architectures.PARTS}
    totals = figures["internvl2_parameters"]
    assert totals["InternVL2-2B"] == OFFICIAL_2B["parameters"]["total"]
    assert 8.0e9 < totals["InternVL2-8B"] < 8.1e9  # published as 8.08 B
    assert totals["InternVL2-1B"] is None  # a Qwen2 LLM: the course's code refuses to build it


def test_lesson_01_sets_internvit_beside_timm_vit(executed_notebook):
    _, figures = executed_notebook("01")
    groups = figures["vit_parameter_groups"]
    ours, timm = groups["InternViT-300M"], groups["timm ViT-L/14"]
    assert figures["vit_parameters"]["InternViT-300M"] == OFFICIAL_2B["parameters"]["vision_model"]
    same = ("patch embedding", "class token + positions", "blocks: norms, attention, MLP")
    assert {g: ours[g] for g in same} == {g: timm[g] for g in same}
    width, depth = 1024, 24
    assert (ours["layer scale"], timm["layer scale"]) == (2 * width * depth, 0)
    assert (ours["final norm"], timm["final norm"]) == (0, 2 * width)


def test_lesson_01_runs_the_four_design_patterns(executed_notebook):
    _, figures = executed_notebook("01")
    image, text_ids = architectures.toy_inputs()
    patches, words = (image.shape[-1] // architectures.PATCH) ** 2, text_ids.shape[1]
    caption = architectures.CrossModalConversion().caption_length
    queries = architectures.QueryConnectorSharedDecoder().connector.queries.shape[0]
    assert figures["pattern_decoder_lengths"] == {
        "separate encoders + shared decoder": patches + words,
        "separate encoders + query connector": queries + words,
        "joint encoder": patches + words,
        "cross-modal conversion": caption + words,
        "cross-attention": words,
    }


def test_lesson_01_counts_the_query_connector(executed_notebook, tiny_model_path):
    _, figures = executed_notebook("01")
    toy = figures["pattern_parameters"]
    shared_decoder = architectures.SeparateEncodersSharedDecoder()
    projector = architectures.count_parameters(shared_decoder.projector)
    queries = architectures.QueryConnectorSharedDecoder().connector.queries.shape[0]
    assert toy["separate encoders + query connector"] == (
        toy["separate encoders + shared decoder"] - projector
        + query_connector_parameters(architectures.VISION_WIDTH, architectures.WIDTH, queries))

    config = InternVLChatConfig.from_pretrained(tiny_model_path)
    vit, llm = config.vision_config.hidden_size, config.llm_config.hidden_size
    assert figures["connector_comparison"] == {
        "pixel shuffle + mlp1": {"tokens": config.num_image_token, "parameters": mlp1_parameters(vit, llm)},
        "query connector": {"tokens": config.num_image_token,
                            "parameters": query_connector_parameters(vit, llm, config.num_image_token)},
    }
    assert figures["connector_parameters_2b"] == {
        "mlp1": OFFICIAL_2B["parameters"]["mlp1"],
        "query connector": query_connector_parameters(1024, 2048, 256),
    }
    assert mlp1_parameters(1024, 2048) == OFFICIAL_2B["parameters"]["mlp1"]  # the formula itself, on the 2B


def test_lesson_01_freezes_by_training_stage(executed_notebook):
    _, figures = executed_notebook("01")
    assert figures["training_stage_trainable"] == {
        "1 · MLP warm-up": OFFICIAL_2B["parameters"]["mlp1"],
        "2 · instruction tuning": OFFICIAL_2B["parameters"]["total"],
    }


def test_lesson_01_records_the_tiling_and_token_figures(executed_notebook, tiny_model_path):
    _, figures = executed_notebook("01")
    config_2b = build_config("internvl2-2b")
    assert figures["internvl2_2b_tiling"] == {"tile_size": 448, "max_dynamic_patch": 12, "num_image_token": 256}
    assert figures["internvl2_2b_tokens_800x600"] == count_tiles(800, 600, 1, 12, 448) * config_2b.num_image_token
    config = InternVLChatConfig.from_pretrained(tiny_model_path)
    assert figures["tokens_per_tile"] == config.num_image_token
    tiles = count_tiles(800, 600, 1, config.max_dynamic_patch, config.image_size)
    assert figures["prompt_image_tokens"] == tiles * config.num_image_token
    assert figures["streamed_pieces"] > 1 and figures["batch_answers"] == 2


def test_lesson_01_follows_one_forward_pass(executed_notebook, tiny_model_path):
    _, figures = executed_notebook("01")
    config = InternVLChatConfig.from_pretrained(tiny_model_path)
    vit, llm = config.vision_config, config.llm_config
    tiles = count_tiles(800, 600, 1, config.max_dynamic_patch, config.image_size)
    side = config.image_size // vit.patch_size
    stages = figures["forward_stage_shapes"]
    length = stages["prompt token ids"][1]
    assert stages == {
        "tiles": [tiles, 3, config.image_size, config.image_size],
        "prompt token ids": [1, length],
        "patch embedding (conv, stride = patch)": [tiles, vit.hidden_size, side, side],
        "+ class token + positions": [tiles, 1 + side**2, vit.hidden_size],
        "ViT layers": [tiles, 1 + side**2, vit.hidden_size],
        "class token dropped, pixel shuffle": [tiles, config.num_image_token, 4 * vit.hidden_size],
        "mlp1 projector": [tiles, config.num_image_token, llm.hidden_size],
        "merged embeddings (text + image)": [1, length, llm.hidden_size],
        "logits": [1, length, llm.vocab_size],
    }
    assert length > tiles * config.num_image_token  # the prompt holds every image token and the question


def test_lesson_01_shows_the_code_it_teaches(executed_notebook):
    path, _ = executed_notebook("01")
    shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs_of(path))
    for taught in (pixel_shuffle, choose_grid, InternVLChatModel.extract_feature,
                   InternVLChatModel.merge_image_features, architectures.SeparateEncodersSharedDecoder,
                   architectures.QueryConnector, architectures.QueryConnectorSharedDecoder.forward):
        assert inspect.getsource(taught) in shown, taught.__qualname__


def test_lesson_01_shows_its_pictures(executed_notebook):
    path, _ = executed_notebook("01")
    images = [o for o in outputs_of(path) if "image/png" in o.get("data", {})]
    assert len(images) == 3  # architecture families, parameter split, tiling


def mapped_names() -> list[str]:
    """The course-side names in the first column of section 7's table (course code -> OpenGVLab's files)."""
    cells = json.loads(LESSON.read_text(encoding="utf-8"))["cells"]
    table = next("".join(c["source"]) for c in cells
                 if c["cell_type"] == "markdown" and "| course (`course_utils/internvl/`)" in "".join(c["source"]))
    return re.findall(r"^\| `([\w.]+)` \|", table, flags=re.MULTILINE)


def test_the_opengvlab_table_has_rows():
    assert len(mapped_names()) >= 15


@pytest.mark.parametrize("name", mapped_names())
def test_every_course_name_in_the_opengvlab_table_exists(name):
    module_name, *attributes = name.split(".")
    target = importlib.import_module(f"course_utils.internvl.{module_name}")
    for attribute in attributes:
        target = getattr(target, attribute)  # a renamed function fails here, so the table cannot go stale
    assert callable(target)


def test_pixel_shuffle_is_two_reshapes_and_two_permutes():
    source = inspect.getsource(pixel_shuffle)
    assert (source.count(".reshape("), source.count(".permute(")) == (2, 2)  # as the lesson says
