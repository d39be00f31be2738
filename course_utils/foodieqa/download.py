"""Fetch the real FoodieQA (a gated Hugging Face dataset) and unzip it.

``huggingface_hub`` does the download, from ``HF_ENDPOINT`` (huggingface.co or a mirror of it, see
:mod:`course_utils.hub`): it reads the token from ``HF_TOKEN`` or a prior ``huggingface-cli login`` (this module
never sees, prints or stores it), keeps the file in its cache and resumes an interrupted download on the next
call. Each way it can fail (no token, access not granted, offline) ends in a message saying how to get access.
Whether the endpoint can be reached is asked once per process, with one short connection: offline, the cache is
used without the hub's retries, and the learner reads one message.

Each zip is unzipped once into ``foodieqa_download_dir()/FoodieQA-<hash of its content>/``, so a different zip
never reuses another's folder.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import CourseError
from ..hub import HF_MIRROR_EXAMPLE, has_token, hf_downloads_through, hf_endpoint, hf_offline, reachable
from ..outputs import is_course_output, staged_output
from ..paths import foodieqa_download_dir
from .layout import RELEASE_DIR, SIVQA_FILE, FoodieQAFormatError, sha256_of

FOODIEQA_REPO_ID = "lyan62/FoodieQA"
FOODIEQA_ZIP = "FoodieQA.zip"
DATASET_PAGE = f"https://huggingface.co/datasets/{FOODIEQA_REPO_ID}"
UNZIPPED_KIND = "unzipped-foodieqa"  # the outputs marker's kind
ZIP_SOURCE_FILE = "course_zip_source.json"  # in each unzipped folder: which zip, and where its release root is

HOW_TO_GET_ACCESS = (
    "FoodieQA is a gated dataset (licence CC-BY-NC-ND-4.0). To use it:\n"
    f"  1. sign in on huggingface.co, open {DATASET_PAGE} and accept its conditions;\n"
    "  2. create a read token at https://huggingface.co/settings/tokens;\n"
    "  3. `export HF_TOKEN=...` before starting Jupyter, or run `huggingface-cli login` once.\n"
    f"From mainland China, also `export HF_ENDPOINT={HF_MIRROR_EXAMPLE}` (a mirror of the hub; it receives your "
    "token, so use a read-only one).\n"
    "Alternatively download FoodieQA.zip in a browser, unzip it and set DATA_ROOT to the unzipped folder; "
    "leave DATA_ROOT unset to use the synthetic FoodieQA."
)


class FoodieQADownloadError(CourseError, RuntimeError):
    """FoodieQA could not be fetched; the message says why and how to get access."""


def explain_download_error(error: Exception, token_found: bool, endpoint: str) -> str:
    """A learner-facing explanation of a huggingface_hub download failure."""
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
    )

    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        reason = f"{endpoint} could not be reached (offline?) and no downloaded copy is in the cache."
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


def unzipped_release(folder: Path) -> tuple[Path, dict] | None:
    """(release root, zip source) of a finished unzip made by the course, or None."""
    if not is_course_output(folder, UNZIPPED_KIND):
        return None
    try:
        source = json.loads((folder / ZIP_SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    root = folder / source["release_root"]
    return (root.resolve(), source) if (root / SIVQA_FILE).is_file() else None


def extract_foodieqa_zip(zip_path: str | Path, dest: str | Path | None = None, origin: str | None = None) -> Path:
    """Unzip a FoodieQA release into ``dest/FoodieQA-<content hash>`` and return the folder holding ``sivqa_tidy.json``.

    The same zip content is unzipped once and then reused; ``origin`` (default: the zip's path) is kept beside
    the files, so that a download can find its own unzip again.
    """
    from tqdm.auto import tqdm

    zip_path = Path(zip_path).expanduser().resolve()
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} does not exist: give the path of the downloaded FoodieQA.zip")
    dest = Path(dest) if dest is not None else foodieqa_download_dir()
    target = dest / f"{RELEASE_DIR}-{sha256_of(zip_path)[:16]}"
    if (found := unzipped_release(target)) is not None:
        return found[0]
    with staged_output(target, UNZIPPED_KIND, protected=[zip_path]) as staging:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                for member in tqdm(_safe_members(archive), desc="unzipping FoodieQA", unit="file"):
                    archive.extract(member, staging)
        except zipfile.BadZipFile as error:
            message = f"{zip_path} is not a valid zip ({error}); delete it and download again"
            raise FoodieQAFormatError(message) from error
        found = sorted(staging.rglob(SIVQA_FILE), key=lambda p: len(p.parts))
        if not found:
            raise FoodieQAFormatError(f"{zip_path} holds no {SIVQA_FILE}: it is not a FoodieQA release")
        source = {"zip": str(zip_path), "origin": origin or str(zip_path),
                  "release_root": found[0].parent.relative_to(staging).as_posix()}
        (staging / ZIP_SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
    return unzipped_release(target)[0]


def download_foodieqa(
    dest: str | Path | None = None,
    *,
    repo_id: str = FOODIEQA_REPO_ID,
    filename: str = FOODIEQA_ZIP,
    downloader: Callable[..., str] | None = None,
) -> Path:
    """Download (resumably) and unzip FoodieQA into ``dest``; return the folder holding ``sivqa_tidy.json``.

    An earlier download's unzip in ``dest`` is reused without asking the hub. ``downloader`` defaults to
    ``huggingface_hub.hf_hub_download`` (offline: its cache only); anything with its signature works.
    """
    dest = Path(dest) if dest is not None else foodieqa_download_dir()
    origin = f"hf://datasets/{repo_id}/{filename}"
    for folder in sorted(dest.glob(f"{RELEASE_DIR}-*")):
        found = unzipped_release(folder)
        if found is not None and found[1]["origin"] == origin:
            return found[0]
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = hf_endpoint()
    request = {"repo_id": repo_id, "filename": filename, "repo_type": "dataset", "endpoint": endpoint}
    if downloader is None:
        from huggingface_hub import hf_hub_download as downloader

        if hf_offline() or not reachable(endpoint):
            request["local_files_only"] = True  # a cached zip still works; no retries against an absent network
    try:
        with hf_downloads_through(endpoint):
            zip_path = downloader(**request)
    except (HfHubHTTPError, OSError) as error:  # hub answers and network failures (requests' are OSErrors)
        raise FoodieQADownloadError(explain_download_error(error, has_token("huggingface"), endpoint)) from error
    return extract_foodieqa_zip(zip_path, dest, origin=origin)
