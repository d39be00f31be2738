"""The converted ``train.json`` as XTuner reads it: ``InternVL_V1_5_Dataset`` with the tiny InternVL2 model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from course_utils.foodieqa import load_manifest, make_synthetic_foodieqa, prepare_foodieqa

# Tiles per picture size under InternVL's dynamic tiling for 224-px tiles, 1..6 tiles and a thumbnail when
# tiled, worked out by hand: the grid whose aspect ratio is closest to the picture's; on a tie the larger grid
# wins when the picture covers more than half of it.
EXPECTED_TILES = {
    (448, 448): 4 + 1,  # 1:1 -> 2x2 (200704 px > half of 448x448 grid), + thumbnail
    (320, 320): 4 + 1,  # 1:1 -> 2x2 (102400 px > 100352), + thumbnail
    (256, 256): 1,  # 1:1 -> 1x1 (65536 px < 100352): one tile, no thumbnail
    (448, 336): 6 + 1,  # 4:3 -> 3x2 (1.5 is closest; 4x3 exceeds 6 tiles)
    (384, 288): 6 + 1,  # 4:3 -> 3x2
    (336, 448): 6 + 1,  # 3:4 -> 2x3
    (288, 384): 6 + 1,  # 3:4 -> 2x3
    (448, 224): 2 + 1,  # 2:1 -> 2x1
}


@pytest.fixture(scope="module")
def six_tile_model(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny base with up to 6 tiles a picture (it sees one by default), so that pictures tile differently."""
    import shutil

    folder = shutil.copytree(tiny_model_path, tmp_path_factory.mktemp("six-tiles") / "model")
    config = json.loads((folder / "config.json").read_text())
    config["max_dynamic_patch"] = 6
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_synthetic_foodieqa(tmp_path_factory.mktemp("xtuner") / "FoodieQA", dishes=6, seed=0)


@pytest.mark.parametrize("style", ["mcq", "original"])
def test_xtuner_reads_every_sample_with_the_expected_image_tokens(six_tile_model, source, tmp_path, style):
    from xtuner.dataset.internvl_dataset import InternVL_V1_5_Dataset
    from xtuner.utils import PROMPT_TEMPLATE

    prepare_foodieqa(source, tmp_path, style=style, test_fraction=0.34, seed=0)
    manifest = load_manifest(tmp_path)
    samples = json.loads(Path(manifest["train_path"]).read_text(encoding="utf-8"))
    dataset = InternVL_V1_5_Dataset(
        str(six_tile_model), copy.deepcopy(PROMPT_TEMPLATE.internlm2_chat),  # XTuner edits the template in place
        data_paths=manifest["train_path"], image_folders=manifest["image_folder"],
    )
    assert len(dataset) == manifest["counts"]["train_questions"] == len(samples)

    config = json.loads((six_tile_model / "config.json").read_text())
    tokens_per_tile = int((config["force_image_size"] // config["vision_config"]["patch_size"]) ** 2
                          * config["downsample_ratio"] ** 2)
    assert tokens_per_tile == 64
    tokenizer = dataset.tokenizer
    context_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    tile_counts = set()
    for index, sample in enumerate(samples):
        tiles = EXPECTED_TILES[tuple(sample["image_wh"])]
        tile_counts.add(tiles)
        item = dataset.prepare_data(index)  # not dataset[index]: that silently swaps in another sample on errors
        assert item is not None, f"XTuner could not load {sample['image']}"
        assert tuple(item["pixel_values"].shape) == (tiles, 3, 224, 224)
        assert item["input_ids"].count(context_id) == tiles * tokens_per_tile
        supervised = [token for token in item["labels"] if token >= 0]
        assert tokenizer.decode(supervised) == sample["conversations"][1]["value"] + "<|im_end|>"
        # image_wh makes XTuner's length estimate follow this picture's grid instead of assuming 6 + 1 tiles
        # (the estimate counts a thumbnail even for a single tile, where the loader adds none)
        estimated_tiles = tiles if tiles > 1 else 2
        text_tokens = dataset.conv2length_text[len("\n".join(turn["value"] for turn in sample["conversations"]))]
        assert dataset.modality_length[index] == text_tokens + estimated_tiles * tokens_per_tile
    assert len(tile_counts) >= 3, f"pictures should tile differently, got {tile_counts}"
