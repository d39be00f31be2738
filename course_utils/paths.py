"""Where the course reads and writes: every default path is decided here and nowhere else.

Environment variables override the defaults:

* ``RUN_DIR``    - folder for everything the lessons produce (default: ``<project>/runs``)
* ``MODEL_PATH`` - a real InternVL2 model folder or hub id (default: the embedded tiny model)
* ``DATA_ROOT``  - an unzipped FoodieQA folder (default: the embedded synthetic FoodieQA)
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_MODEL_NAME = "tiny-internvl2"
SYNTHETIC_DATA_NAME = "synthetic-foodieqa"


def project_root() -> Path:
    """The course checkout (the folder holding ``pyproject.toml``), or the working directory if installed elsewhere."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def run_dir() -> Path:
    """The folder every lesson writes into; created on first use."""
    path = Path(os.environ.get("RUN_DIR") or project_root() / "runs").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_path(name: str) -> str | None:
    """The value of an environment variable naming a path, or None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def tiny_model_dir() -> Path:
    """Where the embedded tiny InternVL2 model is built."""
    return run_dir() / "models" / TINY_MODEL_NAME


def synthetic_data_dir() -> Path:
    """Where the embedded synthetic FoodieQA is built."""
    return run_dir() / "data" / SYNTHETIC_DATA_NAME
