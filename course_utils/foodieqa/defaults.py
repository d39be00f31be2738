"""Which FoodieQA the course uses, and building what is missing when a lesson runs alone.

The data root is, in order: the argument (a notebook's ``DATA_ROOT`` parameter), the ``DATA_ROOT`` environment
variable, else the embedded synthetic FoodieQA (built on first use). A data root may be an unzipped folder, a
downloaded ``FoodieQA.zip``, or the word ``download`` (fetch the gated dataset with your Hugging Face token).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..paths import env_path, synthetic_data_dir
from .convert import load_manifest, prepare_foodieqa, prepared_dir
from .download import download_foodieqa, extract_foodieqa_zip, foodieqa_download_dir
from .layout import SIVQA_FILE, find_foodieqa_root
from .synthetic import make_synthetic_foodieqa

DOWNLOAD_KEYWORD = "download"
SYNTHETIC_DISHES = 40
SYNTHETIC_SEED = 0


def ensure_synthetic_foodieqa() -> Path:
    """The embedded synthetic FoodieQA in ``synthetic_data_dir()``, built there first if missing."""
    target = synthetic_data_dir()
    if (target / SIVQA_FILE).is_file():
        return target.resolve()
    staging = target.with_name(target.name + ".building")  # renamed when complete: no half-built dataset
    shutil.rmtree(staging, ignore_errors=True)
    make_synthetic_foodieqa(staging, dishes=SYNTHETIC_DISHES, seed=SYNTHETIC_SEED)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target.resolve()


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The FoodieQA folder to use (see the module docstring); FileNotFoundError naming the fix if it is not one."""
    value = data_root if data_root is not None and str(data_root).strip() else env_path("DATA_ROOT")
    if value is None:
        return ensure_synthetic_foodieqa()
    if str(value) == DOWNLOAD_KEYWORD:
        return download_foodieqa()
    path = Path(value).expanduser()
    if path.suffix == ".zip" and path.is_file():
        return extract_foodieqa_zip(path, foodieqa_download_dir())
    root = find_foodieqa_root(path)
    if root is None:
        raise FileNotFoundError(
            f"DATA_ROOT {str(path)!r} holds no {SIVQA_FILE} (nor a FoodieQA/ folder with one). Point it at the "
            "unzipped FoodieQA folder or at FoodieQA.zip, set it to 'download' to fetch the gated dataset "
            "(`python -m course_utils download-foodieqa`), or leave it unset for the synthetic FoodieQA."
        )
    return root


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
