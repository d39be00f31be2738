"""Lesson 01's checks accept the right answers and turn plausible wrong ones away with a hint (no lesson run)."""

import pytest
import torch

from course_utils import architectures
from course_utils.exercises import find_check
from course_utils.internvl.preprocessing import choose_grid, count_tiles

CONFIG_2B = architectures.published_config("InternVL2-2B")
PHONE = dict(photo=(1920, 1080), tile_size=448, tokens_per_tile=256, max_nums=(6, 12))


def grid_tiles(max_num):
    columns, rows = choose_grid(1920, 1080, 1, max_num, 448)
    return columns * rows


def test_01_1_counts_tiles_with_the_thumbnail():
    check = find_check("01.1")
    right = {m: (grid_tiles(m) + 1) * 256 for m in (6, 12)}  # more than one tile: a thumbnail joins them
    assert right == {m: count_tiles(1920, 1080, 1, m, 448) * 256 for m in (6, 12)}
    assert check(right, **PHONE) is None
    assert "thumbnail" in check({m: grid_tiles(m) * 256 for m in (6, 12)}, **PHONE)
    assert "every tile costs 256" in check({m: grid_tiles(m) + 1 for m in (6, 12)}, **PHONE)
    assert "one entry per max_num" in check(right[6], **PHONE)


def test_01_1_holds_for_other_settings():
    check = find_check("01.1")
    settings = dict(photo=(800, 600), tile_size=224, tokens_per_tile=64, max_nums=(4,))
    columns, rows = choose_grid(800, 600, 1, 4, 224)
    tiles = columns * rows + (columns * rows > 1)
    assert check({4: tiles * 64}, **settings) is None
    assert check({4: (tiles + 1) * 64}, **settings) is not None


def test_01_2_checks_shape_tokens_and_width():
    check = find_check("01.2")
    grid = torch.arange(64.0).reshape(1, 8, 8, 1)
    right = {"shape": (1, 2, 2, 16), "tokens_per_tile": 64, "mlp1_input": 16 * 1024}
    assert check(right, grid=grid, vision_config=CONFIG_2B.vision_config) is None
    assert check(right | {"shape": [1, 2, 2, 16]}, grid=grid, vision_config=CONFIG_2B.vision_config) is None
    assert "pixel_shuffle" in check(right | {"shape": (1, 4, 4, 4)}, grid=grid, vision_config=CONFIG_2B.vision_config)
    assert "1/16" in check(right | {"tokens_per_tile": 256}, grid=grid, vision_config=CONFIG_2B.vision_config)
    assert "16 patches" in check(right | {"mlp1_input": 4 * 1024}, grid=grid, vision_config=CONFIG_2B.vision_config)


def test_01_3_runs_the_patterns_on_the_bigger_image():
    check = find_check("01.3")
    image, (_, text_ids) = torch.rand(1, 3, 64, 64), architectures.toy_inputs()
    patches, words = (64 // architectures.PATCH) ** 2, text_ids.shape[1]
    queries = architectures.QueryConnectorSharedDecoder().connector.queries.shape[0]
    caption = architectures.CrossModalConversion().caption_length
    right = {
        "separate encoders + shared decoder": patches + words,
        "separate encoders + query connector": queries + words,
        "joint encoder": patches + words,
        "cross-modal conversion": caption + words,
        "cross-attention": words,
    }
    assert check(right, image=image, text_ids=text_ids) is None
    grown_everywhere = right | {"separate encoders + query connector": patches + words}
    assert "separate encoders + query connector" in check(grown_everywhere, image=image, text_ids=text_ids)
    assert "one decoder length per pattern" in check({"joint encoder": patches + words}, image=image, text_ids=text_ids)


@pytest.fixture(scope="module")
def llm_8b():
    return architectures.published_config("InternVL2-8B").llm_config


def test_01_4_names_the_missing_piece(llm_8b):
    check = find_check("01.4")
    hidden, layers, vocab = llm_8b.hidden_size, llm_8b.num_hidden_layers, llm_8b.vocab_size
    head_dim = hidden // llm_8b.num_attention_heads
    wqkv = hidden * (llm_8b.num_attention_heads + 2 * llm_8b.num_key_value_heads) * head_dim
    per_layer = wqkv + hidden * hidden + 3 * hidden * llm_8b.intermediate_size + 2 * hidden
    right = 2 * vocab * hidden + layers * per_layer + hidden
    assert check(right, llm_config=llm_8b) is None
    assert "output head" in check(right - vocab * hidden, llm_config=llm_8b)
    assert "final RMSNorm" in check(right - hidden, llm_config=llm_8b)
    assert "two RMSNorms" in check(right - 2 * hidden * layers, llm_config=llm_8b)
    assert "grouped-query" in check(right + layers * (3 * hidden * hidden - wqkv), llm_config=llm_8b)
    assert "count per layer" in check(right + 1, llm_config=llm_8b)
