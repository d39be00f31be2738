"""Building what a lesson needs when it runs alone: the synthetic FoodieQA and the converted data.

Which FoodieQA a lesson uses is decided by :func:`resolve_data_root`.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import DOWNLOAD_KEYWORD, env_path, foodieqa_download_dir, prepared_dir, synthetic_data_dir
from .convert import load_manifest, prepare_foodieqa
from .layout import SIVQA_FILE, find_foodieqa_root
from .prompts import DEFAULT_STYLE
from .synthetic import make_synthetic_foodieqa

SYNTHETIC_DISHES = 40
SYNTHETIC_SEED = 0


def ensure_synthetic_foodieqa() -> Path:
    """The embedded synthetic FoodieQA in ``synthetic_data_dir()``, built there first if missing."""
    target = synthetic_data_dir()
    if not (target / SIVQA_FILE).is_file():
        make_synthetic_foodieqa(target, dishes=SYNTHETIC_DISHES, seed=SYNTHETIC_SEED)
    return target.resolve()


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The FoodieQA folder a lesson uses: ``data_root``, else ``$DATA_ROOT``, else the synthetic FoodieQA (built).

    A data root may be an unzipped folder (or the folder holding its ``FoodieQA/``), a downloaded ``FoodieQA.zip``
    (unzipped once per zip content), or the word ``download`` (fetch the gated dataset with your Hugging Face
    token). An empty one is an error: leave it unset (None) for the synthetic FoodieQA.
    """
    from .download import download_foodieqa, extract_foodieqa_zip

    if data_root is not None and not str(data_root).strip():
        raise ValueError("the data root is empty: give a FoodieQA folder, FoodieQA.zip or 'download', "
                         "or leave DATA_ROOT unset for the synthetic FoodieQA")
    value = data_root if data_root is not None else env_path("DATA_ROOT")
    if value is None:
        return ensure_synthetic_foodieqa()
    if str(value).strip() == DOWNLOAD_KEYWORD:
        return download_foodieqa()
    path = Path(value).expanduser()
    if path.suffix == ".zip" and path.is_file():
        return extract_foodieqa_zip(path, foodieqa_download_dir())
    root = find_foodieqa_root(path)
    if root is None:
        what = "does not exist" if not path.exists() else f"holds no {SIVQA_FILE} (nor a FoodieQA/ folder with one)"
        raise FileNotFoundError(
            f"DATA_ROOT {str(path)!r} {what}. Point it at the unzipped FoodieQA folder or at FoodieQA.zip, set it "
            "to 'download' to fetch the gated dataset (`python -m course_utils download-foodieqa`), or leave it "
            "unset for the synthetic FoodieQA."
        )
    return root


def ensure_prepared_foodieqa(
    data_root: str | Path | None = None, style: str = DEFAULT_STYLE, test_fraction: float = 0.25, seed: int = 0
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
