"""Building what a lesson needs when it runs alone: the synthetic FoodieQA and the converted data.

Which FoodieQA a lesson uses is decided by :func:`course_utils.paths.resolve_data_root`.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import prepared_dir, resolve_data_root, synthetic_data_dir
from .convert import load_manifest, prepare_foodieqa
from .layout import SIVQA_FILE
from .synthetic import make_synthetic_foodieqa

SYNTHETIC_DISHES = 40
SYNTHETIC_SEED = 0


def ensure_synthetic_foodieqa() -> Path:
    """The embedded synthetic FoodieQA in ``synthetic_data_dir()``, built there first if missing."""
    target = synthetic_data_dir()
    if not (target / SIVQA_FILE).is_file():
        make_synthetic_foodieqa(target, dishes=SYNTHETIC_DISHES, seed=SYNTHETIC_SEED)
    return target.resolve()


def ensure_prepared_foodieqa(
    data_root: str | Path | None = None, style: str = "mcq", test_fraction: float = 0.25, seed: int = 0
) -> dict:
    """The manifest of converted data in ``prepared_dir()``; converts first if missing or made with other settings."""
    src = resolve_data_root(data_root)
    wanted = {"image_folder": str(src), "style": style, "test_fraction": test_fraction, "seed": seed}
    try:
        manifest = load_manifest()
        if all(manifest[key] == value for key, value in wanted.items()):
            return manifest
    except FileNotFoundError:
        pass
    prepare_foodieqa(src, prepared_dir(), style=style, test_fraction=test_fraction, seed=seed)
    return load_manifest()
