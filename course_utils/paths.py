"""Where the course reads and writes: every default path, named here and nowhere else.

Environment variables override the defaults:

* ``RUN_DIR``    - folder for everything the lessons produce (default: ``<project>/runs``)
* ``MODEL_PATH`` - a real InternVL2 model folder, a model id (``OpenGVLab/InternVL2-2B``) or ``download`` (that
  model), downloaded into ``models/`` on first use (default: the embedded tiny model)
* ``DATA_ROOT``  - an unzipped FoodieQA folder, ``FoodieQA.zip`` or ``download`` (default: the synthetic FoodieQA)

Where downloads come from (``HF_ENDPOINT``, ``MODEL_SOURCE``) is :mod:`course_utils.hub`'s business.

This module only names places; what builds the defaults that live there is the model code
(:func:`course_utils.tiny_model.resolve_model_path`) and the data code
(:func:`course_utils.foodieqa.defaults.resolve_data_root`).

Under ``RUN_DIR``: ``models/`` (the tiny model, downloaded models), ``data/`` (synthetic, downloaded, unzipped
and prepared FoodieQA), ``finetune/`` (lesson 04's runs) and ``evaluation/`` (lesson 05's results).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import CourseError

TINY_MODEL_NAME = "tiny-internvl2"
SYNTHETIC_DATA_NAME = "synthetic-foodieqa"
DOWNLOAD_KEYWORD = "download"  # MODEL_PATH=download fetches InternVL2-2B, DATA_ROOT=download the gated FoodieQA


def project_root() -> Path:
    """The course checkout (the folder holding ``pyproject.toml``), or the working directory if installed elsewhere."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def run_dir() -> Path:
    """The folder every lesson writes into; created on first use."""
    path = Path(os.environ.get("RUN_DIR") or project_root() / "runs").expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only filesystem, a full disk, no permission
        raise CourseError(f"cannot create the run folder {path} ({error.strerror}): set RUN_DIR to a folder you "
                          "can write to") from error
    return path


def env_path(name: str) -> str | None:
    """The value of an environment variable naming a path, or None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


# The course's editions: the same code cells, prose written for each language's readers.
EDITIONS = {"en": "English", "zh-CN": "中文"}
FIRST_EDITION = "en"  # the one written first; the others are translated from it
LESSON_GLOB = "[0-9][0-9]_*.ipynb"  # a lesson's file name: its number, then its topic


def edition_subfolder(edition: str) -> str:
    if edition not in EDITIONS:
        raise ValueError(f"no {edition!r} edition of the lessons: choose one of {', '.join(EDITIONS)}")
    return "" if edition == FIRST_EDITION else edition


def notebook_dir(edition: str = FIRST_EDITION) -> Path:
    """The folder of an edition's numbered lesson notebooks (``notebooks/``, ``notebooks/zh-CN/``)."""
    return project_root() / "notebooks" / edition_subfolder(edition)


def notebook_build_dir(edition: str = FIRST_EDITION) -> Path:
    """Where ``run-notebook`` and ``run-course`` put an edition's executed lessons by default."""
    return project_root() / "build" / "notebooks" / edition_subfolder(edition)


def tiny_model_dir() -> Path:
    """Where the embedded tiny InternVL2 model is built."""
    return run_dir() / "models" / TINY_MODEL_NAME


def downloaded_model_dir(repo_id: str) -> Path:
    """Where a model id (``owner/name``) is downloaded by default: ``models/<name>``."""
    return run_dir() / "models" / repo_id.split("/")[-1]


def synthetic_data_dir() -> Path:
    """Where the embedded synthetic FoodieQA is built."""
    return run_dir() / "data" / SYNTHETIC_DATA_NAME


def foodieqa_download_dir() -> Path:
    """Where FoodieQA zips (downloaded or given as ``DATA_ROOT``) are unzipped, one folder per zip content."""
    return run_dir() / "data" / "foodieqa"


def prepared_dir() -> Path:
    """Where lesson 03 writes the converted data (XTuner's format) by default."""
    return run_dir() / "data" / "foodieqa-xtuner"


def finetune_dir() -> Path:
    """Where lesson 04's fine-tuning runs live, one folder per run."""
    return run_dir() / "finetune"


def evaluation_dir() -> Path:
    """Where lesson 05 writes converted models' results."""
    return run_dir() / "evaluation"


def is_hub_id(value: str) -> bool:
    """Whether ``value`` reads as a Hugging Face hub id (``owner/name``) rather than a local path."""
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and not value.endswith("/")


@contextmanager
def temporary_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the ``with`` block (child processes inherit them), then restore each one as
    it was: a variable that was unset is removed again."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
