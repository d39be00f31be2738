"""Download the real InternVL2: ``python -m course_utils download-model``, or ``MODEL_PATH=download`` in a lesson.

The files come from Hugging Face, through ``HF_ENDPOINT`` when it names a mirror, or from ModelScope
(``MODEL_SOURCE=modelscope``); see :mod:`course_utils.hub`. Each hub's own client does the transfer
(``huggingface_hub``, ``modelscope_hub``): it sends the token, checks sizes and resumes a file where it stopped.

The files land in a hidden folder beside the target (``.InternVL2-2B.download``), kept between runs so that a
new run resumes what an interrupted one left; once every file is there they move into the target in one step
(:mod:`course_utils.outputs`), with ``course_download.json`` saying where they came from. A finished download
is reused without asking the network, and a folder the course did not make is never replaced (unless forced).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .errors import CourseError
from .hub import (
    HF_DEFAULT_ENDPOINT, HF_MIRROR_EXAMPLE, SOURCE_NAMES, has_token, hf_downloads_through, hf_offline, model_source,
    reachable, source_endpoint,
)
from .outputs import check_output, is_course_output, staged_output
from .paths import downloaded_model_dir, is_hub_id

DEFAULT_MODEL_REPO = "OpenGVLab/InternVL2-2B"
DOWNLOADED_MODEL_KIND = "downloaded-model"  # the outputs marker's kind
DOWNLOAD_RECORD_FILE = "course_download.json"
PARTIAL_RECORD_FILE = ".course-download.json"  # in the hidden folder: which source and repository it holds
HF_BOOKKEEPING_DIR = ".cache"  # huggingface_hub's resume metadata inside a download folder
TOKEN_HELP = {
    "huggingface": "set HF_TOKEN=<your read token> (or run `huggingface-cli login` once)",
    "modelscope": "set MODELSCOPE_API_TOKEN=<your token> (or run `modelscope login` once)",
}


class ModelDownloadError(CourseError, RuntimeError):
    """The model could not be downloaded; the message says why and what to do."""


def finished_download(folder: str | Path, repo_id: str | None = None) -> dict | None:
    """The record of a finished course download in ``folder`` (of ``repo_id``, when given), or None."""
    if not is_course_output(folder, DOWNLOADED_MODEL_KIND):
        return None
    try:
        record = json.loads((Path(folder) / DOWNLOAD_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if repo_id is None or record.get("repo_id") == repo_id else None


def model_page(source: str, endpoint: str, repo_id: str) -> str:
    """The web page of ``repo_id``, where its terms are accepted."""
    return f"{endpoint}/models/{repo_id}" if source == "modelscope" else f"{endpoint}/{repo_id}"


def download_model(repo_id: str = DEFAULT_MODEL_REPO, dest: str | Path | None = None, source: str | None = None,
                   force: bool = False) -> Path:
    """Download ``repo_id`` from ``source`` (default ``$MODEL_SOURCE``, else Hugging Face) into ``dest`` (default
    ``RUN_DIR/models/<name>``) and return the folder; a finished download there is returned as it is."""
    if not is_hub_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a model id: give one as owner/name, e.g. {DEFAULT_MODEL_REPO}")
    source = model_source(source)
    dest = Path(dest).expanduser() if dest is not None else downloaded_model_dir(repo_id)
    if finished_download(dest, repo_id) is not None:
        return dest.resolve()
    target = check_output(dest, DOWNLOADED_MODEL_KIND, force=force)  # before any network
    endpoint = source_endpoint(source)
    if not reachable(endpoint) or (source == "huggingface" and hf_offline()):
        raise ModelDownloadError(f"{endpoint} could not be reached (offline?), so {repo_id} was not downloaded. "
                                 f"{other_sources_hint(source, endpoint)}")
    partial = target.parent / f".{target.name}.download"
    keep_only_same_download(partial, {"repo_id": repo_id, "source": source})
    print(f"downloading {repo_id} from {SOURCE_NAMES[source]} ({endpoint}) into {target}")
    fetch = fetch_from_modelscope if source == "modelscope" else fetch_from_huggingface
    try:
        revision = fetch(repo_id, partial, endpoint)
    except Exception as error:
        if not is_download_failure(error):
            raise
        raise ModelDownloadError(explain_failure(error, source, endpoint, repo_id)) from error
    record = {"repo_id": repo_id, "source": source, "endpoint": endpoint, "revision": revision}
    with staged_output(target, DOWNLOADED_MODEL_KIND, force=force) as staging:
        for entry in partial.iterdir():
            if entry.name not in (PARTIAL_RECORD_FILE, HF_BOOKKEEPING_DIR):
                entry.rename(staging / entry.name)
        (staging / DOWNLOAD_RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(partial, ignore_errors=True)
    return target


def keep_only_same_download(partial: Path, identity: dict) -> None:
    """Create the hidden download folder, or keep it when it holds the same repository from the same source
    (files to resume); one holding another download is started afresh."""
    record = partial / PARTIAL_RECORD_FILE
    try:
        same = json.loads(record.read_text(encoding="utf-8")) == identity
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        record.write_text(json.dumps(identity) + "\n", encoding="utf-8")


def fetch_from_huggingface(repo_id: str, folder: Path, endpoint: str) -> str:
    """Download every file of ``repo_id`` into ``folder`` with huggingface_hub; return the commit downloaded."""
    from huggingface_hub import HfApi, snapshot_download

    with hf_downloads_through(endpoint):
        info = HfApi(endpoint=endpoint).model_info(repo_id)
        snapshot_download(repo_id, revision=info.sha, local_dir=folder, endpoint=endpoint)
    # snapshot_download returns a non-empty folder as it is when the hub stops answering midway: count the files.
    missing = [sibling.rfilename for sibling in info.siblings or () if not (folder / sibling.rfilename).is_file()]
    if missing:
        raise ModelDownloadError(f"{len(missing)} of {len(info.siblings)} files of {repo_id} did not arrive "
                                 f"(first: {missing[0]}): run the download again, it resumes where it stopped")
    return info.sha


def fetch_from_modelscope(repo_id: str, folder: Path, endpoint: str) -> str:
    """Download every file of ``repo_id`` into ``folder`` with ModelScope's client; return the revision."""
    from modelscope_hub import HubApi, HubConfig

    revision = "master"  # ModelScope's default branch
    HubApi(config=HubConfig(endpoint=endpoint)).download_repo(repo_id, "model", revision=revision, local_dir=folder)
    return revision


def is_download_failure(error: Exception) -> bool:
    """Whether ``error`` is the hub's or the network's (requests' errors are OSErrors), not a bug of the course."""
    from modelscope_hub.errors import HubError

    return isinstance(error, (OSError, HubError))


def failure_kind(error: Exception) -> str:
    """``denied`` (gated or private), ``missing``, ``server`` or ``network``, from either client's errors."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from modelscope_hub.errors import AuthenticationError, NotExistError, PermissionDeniedError, ServerError

    if isinstance(error, (GatedRepoError, AuthenticationError, PermissionDeniedError)):
        return "denied"
    if isinstance(error, (RepositoryNotFoundError, NotExistError)):
        return "missing"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, ServerError) or (isinstance(error, HfHubHTTPError) and status and status >= 500):
        return "server"
    return "network"


def explain_failure(error: Exception, source: str, endpoint: str, repo_id: str) -> str:
    """One line saying why a download failed and what to do; never the token."""
    kind, name, page = failure_kind(error), SOURCE_NAMES[source], model_page(source, endpoint, repo_id)
    if kind == "denied" and not has_token(source):
        return (f"{repo_id} on {endpoint} is only served to signed-in users who accepted its terms, and no "
                f"{name} token was found: accept them on {page}, then {TOKEN_HELP[source]}")
    if kind == "denied":
        return f"your {name} token has no access to {repo_id} (refused, or not granted yet): request it on {page}"
    if kind == "missing":
        return f"{endpoint} has no model {repo_id} (or it is private): check the name on {page}"
    if kind == "server":
        return f"{endpoint} failed to answer (a server error): run the download again later, it resumes"
    return (f"the download from {endpoint} stopped ({type(error).__name__}): run it again, it resumes where it "
            f"stopped. {other_sources_hint(source, endpoint)}")


def other_sources_hint(source: str, endpoint: str) -> str:
    """Where else the model can come from."""
    if source == "modelscope":
        return "Or unset MODEL_SOURCE to download from Hugging Face (HF_ENDPOINT may name a mirror)."
    if endpoint == HF_DEFAULT_ENDPOINT:
        return (f"From mainland China, set HF_ENDPOINT={HF_MIRROR_EXAMPLE} (a mirror of the hub) or "
                "MODEL_SOURCE=modelscope.")
    return "Or set MODEL_SOURCE=modelscope to download from ModelScope."


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download-model", help="download the real InternVL2 (Hugging Face, a mirror of it, or ModelScope)"
    )
    parser.add_argument("dest", nargs="?", default=None,
                        help="folder to download into (default RUN_DIR/models/<name>: what MODEL_PATH=download uses)")
    parser.add_argument("--repo", default=DEFAULT_MODEL_REPO, help=f"model id (default {DEFAULT_MODEL_REPO})")
    parser.add_argument("--source", choices=("huggingface", "modelscope"), default=None,
                        help="where from (default $MODEL_SOURCE, else huggingface through $HF_ENDPOINT)")
    parser.add_argument("--force", action="store_true", help="replace DEST even if the course did not make it")
    parser.set_defaults(handler=_download_model_cli)


def _download_model_cli(args: argparse.Namespace) -> int:
    try:
        folder = download_model(args.repo, args.dest, args.source, force=args.force)
    except KeyboardInterrupt:
        print("error: interrupted; the files received so far are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    record = finished_download(folder)
    print(f"{args.repo}: {folder} (from {SOURCE_NAMES[record['source']]}, {record['endpoint']})")
    default = args.dest is None and args.repo == DEFAULT_MODEL_REPO
    print(f"to use it in the lessons: export MODEL_PATH={'download' if default else folder}")
    return 0
