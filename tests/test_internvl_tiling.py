"""Dynamic tiling: tile grids and token counts, checked by hand and against XTuner's own implementation."""

import pytest
import torch
from PIL import Image

from course_utils.internvl import count_tiles, dynamic_preprocess, load_image
from course_utils.internvl.preprocessing import choose_grid


@pytest.mark.parametrize(
    "size, grid, tiles",
    [
        ((448, 448), (1, 1), 1),      # one tile, no thumbnail
        ((896, 448), (2, 1), 3),      # 2 tiles + thumbnail
        ((800, 600), (4, 3), 13),     # the FoodieQA photo shape: 12 tiles + thumbnail
        ((448, 1344), (1, 3), 4),     # a tall image: 3 rows
        ((4000, 100), (12, 1), 13),   # a panorama hits the 12-tile cap
    ],
)
def test_tile_grids_for_typical_images(size, grid, tiles):
    assert choose_grid(*size, max_num=12, image_size=448) == grid
    assert count_tiles(*size, max_num=12, image_size=448) == tiles


def test_small_square_image_tie_goes_to_one_tile_and_big_one_to_four():
    # 1:1 matches (1,1), (2,2) and (3,3) equally; more tiles only pay for an image larger than half their area
    assert choose_grid(300, 300) == (1, 1)
    assert choose_grid(1000, 1000) == (3, 3)


def test_tiles_are_cut_row_by_row_and_thumbnail_comes_last():
    image = Image.new("RGB", (896, 448))
    image.paste((255, 0, 0), (0, 0, 448, 448))
    image.paste((0, 0, 255), (448, 0, 896, 448))
    tiles = dynamic_preprocess(image, max_num=12, image_size=448)
    assert [t.getpixel((200, 200)) for t in tiles[:2]] == [(255, 0, 0), (0, 0, 255)]
    assert tiles[2].size == (448, 448) and tiles[2].getpixel((10, 200)) == (255, 0, 0)


def test_image_tokens_are_256_per_tile_for_internvl2_2b():
    tiles = count_tiles(800, 600, max_num=12, image_size=448)
    assert tiles * int((448 // 14) ** 2 * 0.5**2) == 3328  # the 800x600 photo costs 3,328 image tokens


def test_load_image_normalises_with_imagenet_statistics(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("RGB", (224, 224), (124, 116, 104)).save(path)  # ImageNet mean colour
    pixel_values = load_image(path, image_size=224, max_num=6)
    assert pixel_values.shape == (1, 3, 224, 224)
    assert pixel_values.abs().max() < 0.02


def test_tile_counts_agree_with_xtuner_for_many_sizes():
    # (XTuner's total_image_token, a length estimate for batching, counts a thumbnail even for one tile;
    # the tiles it really feeds the model come from its dynamic_preprocess, compared here.)
    from xtuner.dataset.internvl_dataset import dynamic_preprocess as xtuner_tiles

    sizes = [(w, h) for w in (50, 224, 300, 448, 640, 800, 1000, 1500) for h in (60, 224, 333, 448, 600, 1200)]
    for max_num, image_size in ((12, 448), (6, 224)):
        for width, height in sizes:
            ours = count_tiles(width, height, 1, max_num, image_size, use_thumbnail=True)
            image = Image.new("RGB", (width, height))
            assert ours == len(xtuner_tiles(image, 1, max_num, image_size, use_thumbnail=True)), (width, height)


def test_pixels_equal_xtuners_for_a_photo(tmp_path):
    from xtuner.dataset.internvl_dataset import dynamic_preprocess as xtuner_tiles

    torch.manual_seed(0)
    image = Image.fromarray((torch.rand(300, 500, 3) * 255).byte().numpy())
    ours = dynamic_preprocess(image, 1, 6, 224, True)
    theirs = xtuner_tiles(image, 1, 6, 224, True)
    assert [t.tobytes() for t in ours] == [t.tobytes() for t in theirs]
