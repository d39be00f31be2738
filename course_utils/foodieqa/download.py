"""Fetch the real FoodieQA (a gated Hugging Face dataset) and unzip it.

``huggingface_hub`` does the download: it reads the token from ``HF_TOKEN`` or a prior ``huggingface-cli login``
(this module never sees, prints or stores it), keeps the file in its cache and resumes an interrupted download
on the next call. Each way it can fail (no token, access not granted, offline) ends in a message saying how to
get access.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from ..paths import run_dir
from .layout import RELEASE_DIR, SIVQA_FILE, FoodieQAFormatError, find_foodieqa_root

FOODIEQA_REPO_ID = "lyan62/FoodieQA"
FOODIEQA_ZIP = "FoodieQA.zip"
DATASET_PAGE = f"https://huggingface.co/datasets/{FOODIEQA_REPO_ID}"

HOW_TO_GET_ACCESS = (
    "FoodieQA is a gated dataset (licence CC-BY-NC-ND-4.0). To use it:\n"
    f"  1. sign in on huggingface.co, open {DATASET_PAGE} and accept its conditions;\n"
    "  2. create a read token at https://huggingface.co/settings/tokens;\n"
    "  3. `export HF_TOKEN=...` before starting Jupyter, or run `huggingface-cli login` once.\n"
    "Alternatively download FoodieQA.zip in a browser, unzip it and set DATA_ROOT to the unzipped folder; "
    "leave DATA_ROOT unset to use the synthetic FoodieQA."
)


class FoodieQADownloadError(RuntimeError):
    """FoodieQA could not be fetched; the message says why and how to get access."""


def foodieqa_download_dir() -> Path:
    """Where the real FoodieQA is unzipped by default."""
    return run_dir() / "data" / "foodieqa"


def has_hf_token() -> bool:
    """Whether huggingface_hub finds a token (``HF_TOKEN`` or a saved login); the token itself stays unread here."""
    from huggingface_hub import get_token

    return get_token() is not None


def explain_download_error(error: Exception, token_found: bool) -> str:
    """A learner-facing explanation of a huggingface_hub download failure."""
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
    )

    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        reason = "huggingface.co could not be reached (offline?) and no downloaded copy is in the cache."
    elif not token_found and isinstance(error, RepositoryNotFoundError):  # also GatedRepoError
        reason = "no Hugging Face token was found; the dataset is only served to users who accepted its terms."
    elif isinstance(error, GatedRepoError):
        reason = f"your token has no access to {FOODIEQA_REPO_ID} yet: request it on the dataset page."
    elif isinstance(error, RepositoryNotFoundError):
        reason = "the hub refused the token or does not know the repository: is the token valid and unexpired?"
    elif isinstance(error, EntryNotFoundError):
        reason = f"the dataset has no file {FOODIEQA_ZIP} (its layout may have changed); see {DATASET_PAGE}."
    else:
        reason = f"the download failed ({type(error).__name__}); run it again, it resumes where it stopped."
    return f"Could not download FoodieQA: {reason}\n{HOW_TO_GET_ACCESS}"


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members; refuses absolute paths and ``..`` so that nothing lands outside the target."""
    for member in archive.infolist():
        parts = PurePosixPath(member.filename.replace("\\", "/")).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts:
            raise FoodieQAFormatError(f"unsafe path {member.filename!r} in the zip; refusing to unpack it")
    return archive.infolist()


def extract_foodieqa_zip(zip_path: str | Path, dest: str | Path) -> Path:
    """Unzip a FoodieQA release into ``dest/FoodieQA`` and return that folder (reused when already unzipped)."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    target = dest / RELEASE_DIR
    if (target / SIVQA_FILE).is_file():
        return target.resolve()
    staging = dest / ".unzipping"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in tqdm(_safe_members(archive), desc="unzipping FoodieQA", unit="file"):
                archive.extract(member, staging)
    except zipfile.BadZipFile as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise FoodieQAFormatError(f"{zip_path} is not a valid zip ({error}); delete it and download again") from error
    found = sorted(staging.rglob(SIVQA_FILE), key=lambda p: len(p.parts))
    if not found:
        shutil.rmtree(staging, ignore_errors=True)
        raise FoodieQAFormatError(f"{zip_path} holds no {SIVQA_FILE}: it is not a FoodieQA release")
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(found[0].parent), str(target))
    shutil.rmtree(staging, ignore_errors=True)
    return target.resolve()


def download_foodieqa(
    dest: str | Path | None = None,
    *,
    repo_id: str = FOODIEQA_REPO_ID,
    filename: str = FOODIEQA_ZIP,
    downloader: Callable[..., str] | None = None,
) -> Path:
    """Download (resumably) and unzip FoodieQA into ``dest``; return the folder holding ``sivqa_tidy.json``.

    ``downloader`` defaults to ``huggingface_hub.hf_hub_download``; anything with its signature works.
    """
    dest = Path(dest) if dest is not None else foodieqa_download_dir()
    existing = find_foodieqa_root(dest)
    if existing is not None:
        return existing
    from huggingface_hub.errors import HfHubHTTPError

    if downloader is None:
        from huggingface_hub import hf_hub_download as downloader
    try:
        zip_path = downloader(repo_id=repo_id, filename=filename, repo_type="dataset")
    except (HfHubHTTPError, OSError) as error:  # hub answers and network failures (requests' are OSErrors)
        raise FoodieQADownloadError(explain_download_error(error, has_hf_token())) from error
    dest.mkdir(parents=True, exist_ok=True)
    return extract_foodieqa_zip(zip_path, dest)
