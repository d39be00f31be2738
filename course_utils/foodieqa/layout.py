"""Where a FoodieQA folder is and what it holds: the release layout and record schema, shared by every module here.

An unzipped release is a folder with ``sivqa_tidy.json`` (the single-image questions the course uses) and an
``images/`` folder; each record's ``food_meta.food_file`` is an image path relative to that folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SIVQA_FILE = "sivqa_tidy.json"
IMAGES_DIR = "images"
RELEASE_DIR = "FoodieQA"  # the folder FoodieQA.zip unpacks to
CHOICE_COUNT = 4


class FoodieQAFormatError(ValueError):
    """A folder or file is not a FoodieQA release the course can read."""


def find_foodieqa_root(path: str | Path) -> Path | None:
    """The folder holding ``sivqa_tidy.json``: ``path`` itself or its ``FoodieQA/`` subfolder; None if neither."""
    path = Path(path).expanduser()
    for candidate in (path, path / RELEASE_DIR):
        if (candidate / SIVQA_FILE).is_file():
            return candidate.resolve()
    return None


def load_sivqa(root: str | Path) -> list[Any]:
    """The raw records of ``sivqa_tidy.json`` (a JSON list); raises :class:`FoodieQAFormatError` otherwise."""
    path = Path(root) / SIVQA_FILE
    if not path.is_file():
        raise FoodieQAFormatError(f"{path} does not exist: point DATA_ROOT at the unzipped FoodieQA folder")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FoodieQAFormatError(f"{path} is not valid UTF-8 JSON ({error}); re-download or re-unzip it") from error
    if not isinstance(records, list):
        raise FoodieQAFormatError(f"{path} must hold a JSON list of questions, found {type(records).__name__}")
    return records


def answer_index(record: dict) -> int:
    """The answer as an int 0..3 (FoodieQA stores it as a string, e.g. ``"2"``); raises ValueError otherwise."""
    answer = record["answer"]
    text = str(answer).strip()
    if isinstance(answer, bool) or not isinstance(answer, (str, int)) or not text.lstrip("-").isdigit():
        raise ValueError(f"answer {answer!r} is not an index in 0..{CHOICE_COUNT - 1}")
    if not 0 <= int(text) < CHOICE_COUNT:
        raise ValueError(f"answer {answer!r} not in 0..{CHOICE_COUNT - 1}")
    return int(text)


def image_path(root: str | Path, record: dict) -> Path:
    """The image file of a record, joined with the data folder as the FoodieQA authors do."""
    return Path(root) / record["food_meta"]["food_file"]


def sha256_of(path: str | Path) -> str:
    """The hex SHA-256 of a file's content, read in chunks (a FoodieQA zip is large): what identifies a release."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
