"""Image preprocessing of InternVL2: dynamic tiling into square tiles plus a thumbnail, ImageNet normalisation.

An image is matched to the tile grid (columns x rows, ``min_num <= tiles <= max_num``) whose aspect ratio is
closest to its own, resized to that grid and cut into ``image_size`` squares; when there is more than one tile a
resized copy of the whole image (the thumbnail) is appended. Every tile becomes ``num_image_token`` LLM tokens.
The grid choice follows the published rule exactly (ties go to the larger grid when the image is big enough),
so tile counts agree with XTuner's dataset and LMDeploy's preprocessing.

Part of the model's remote code folder; imports only torch, torchvision and PIL.
"""

import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms.functional import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(min_num, max_num):
    """All (columns, rows) with ``min_num <= columns * rows <= max_num``, smallest tile count first."""
    grids = {(c, r) for c in range(1, max_num + 1) for r in range(1, max_num + 1) if min_num <= c * r <= max_num}
    return sorted(grids, key=lambda grid: (grid[0] * grid[1], grid))


def choose_grid(width, height, min_num=1, max_num=12, image_size=448):
    """The (columns, rows) tile grid for a ``width`` x ``height`` image."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * columns * rows:
            best = (columns, rows)  # same shape, more tiles: worth it only for a large enough image
    return best


def count_tiles(width, height, min_num=1, max_num=12, image_size=448, use_thumbnail=True):
    """How many tiles (thumbnail included) an image of this size becomes."""
    columns, rows = choose_grid(width, height, min_num, max_num, image_size)
    tiles = columns * rows
    return tiles + 1 if use_thumbnail and tiles > 1 else tiles


def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=True):
    """Cut a PIL image into its tiles (row by row), plus the thumbnail when there is more than one tile."""
    columns, rows = choose_grid(*image.size, min_num, max_num, image_size)
    resized = image.resize((columns * image_size, rows * image_size))
    tiles = [
        resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
        for r in range(rows)
        for c in range(columns)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def build_transform(image_size):
    """PIL tile -> normalised (3, image_size, image_size) float tensor."""
    return T.Compose(
        [
            T.Lambda(lambda img: img.convert("RGB") if img.mode != "RGB" else img),
            T.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


def load_image(image, image_size=448, max_num=12, min_num=1, use_thumbnail=True):
    """A path or PIL image -> (tiles, 3, image_size, image_size) pixel values, as the model card's ``load_image``."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    transform = build_transform(image_size)
    tiles = dynamic_preprocess(image.convert("RGB"), min_num, max_num, image_size, use_thumbnail)
    return torch.stack([transform(tile) for tile in tiles])
