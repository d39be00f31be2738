"""The one rule for everything the course writes: staged, marked, and never over a folder it did not make.

Every writer (models, datasets, prepared data, checkpoints, converted models, results, executed notebooks) goes
through :func:`staged_output` (or, for a folder filled file by file, :func:`course_folder` + :func:`staged_file`):

* the files are written into a staging folder next to the target and moved into place only when complete, so an
  error or an interrupt leaves the previous output as it was, never a half-written mix;
* a marker file (:data:`MARKER_FILE`) in each finished folder says that the course made it and of what kind;
* an existing folder is replaced only when it is empty or a course output of the same kind; anything else is
  refused before any work, unless ``force=True``;
* even with ``force``, the command's inputs (``protected``: a source dataset, a base model) and folders such as
  the home directory or the course checkout are never replaced, nor any folder that holds one of them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import CourseError

MARKER_FILE = ".course-output.json"


class OutputRefused(CourseError, ValueError):
    """The course will not write to this folder; the message says why and what to do instead."""


def read_marker(folder: str | Path) -> dict | None:
    """The marker of a course-made folder, or None when there is none (or it is not the course's JSON)."""
    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def is_course_output(folder: str | Path, kind: str | None = None) -> bool:
    """Whether the course made ``folder`` (and, when ``kind`` is given, made it as that kind of output)."""
    marker = read_marker(folder)
    return marker is not None and (kind is None or marker["kind"] == kind)


def _write_marker(folder: Path, kind: str) -> None:
    marker = {"kind": kind, "made_by": "course_utils"}  # no date: the same build gives byte-identical folders
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def _never_replaced() -> list[Path]:
    """Folders no output may be or contain, whatever the arguments: the filesystem root, home, this checkout."""
    from .paths import project_root

    return [Path(Path.home().anchor), Path.home(), project_root()]


def _overlaps(target: Path, other: Path) -> bool:
    return target == other or target in other.parents or other in target.parents


def check_output(target: str | Path, kind: str, force: bool = False, protected: Iterable[str | Path | None] = ()) -> Path:
    """The resolved ``target`` if :func:`staged_output` may write it; :class:`OutputRefused` otherwise.

    Call it before any long work so that a refused folder costs the learner nothing.
    """
    target = Path(target).expanduser().resolve()
    for source in filter(None, protected):
        source = Path(source).expanduser().resolve()
        if _overlaps(target, source):
            raise OutputRefused(
                f"output folder {target} overlaps the input {source}: the course never writes into its own input; "
                "choose an output folder outside it"
            )
    for folder in _never_replaced():
        if target == folder or target in folder.parents:
            raise OutputRefused(f"output folder {target} holds {folder}: choose a new folder for the output")
    _check_writable(target)
    if not target.exists() or force:
        return target
    if not target.is_dir():
        raise OutputRefused(f"{target} is a file, not a folder: choose another output folder (or pass --force)")
    marker = read_marker(target)
    if marker is None and any(target.iterdir()):
        raise OutputRefused(
            f"{target} already holds files the course did not make: nothing was written. Choose an empty or new "
            "folder, or pass --force (force=True) to replace it"
        )
    if marker is not None and marker["kind"] != kind:
        raise OutputRefused(
            f"{target} holds a course {marker['kind']}, not a {kind}: choose another folder, or pass --force "
            "(force=True) to replace it"
        )
    return target


def _check_writable(target: Path) -> None:
    """PermissionError unless a folder can be made where ``target`` goes (tried: permission bits do not tell root)."""
    folder = next(parent for parent in target.parents if parent.exists())
    try:
        Path(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=folder)).rmdir()
    except OSError as error:
        raise PermissionError(f"cannot write in {folder} ({error.strerror}): choose an output folder you can write to") from error


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing target is swapped out first and removed only afterwards."""
    if not target.exists() and not target.is_symlink():
        staging.rename(target)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
    previous.rmdir()  # only the unique name is wanted: rename needs a free path
    target.rename(previous)
    try:
        staging.rename(target)
    except BaseException:
        previous.rename(target)
        raise
    if previous.is_dir() and not previous.is_symlink():
        shutil.rmtree(previous)
    else:
        previous.unlink()


@contextmanager
def staged_output(
    target_dir: str | Path, kind: str, force: bool = False, protected: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Write an output folder safely: ``with staged_output(out, kind="dataset") as staging: ...``.

    Yields an empty staging folder next to ``target_dir``. On normal exit the staging folder, with its marker,
    replaces ``target_dir``; on an exception it is removed and ``target_dir`` is left untouched. Raises
    :class:`OutputRefused` before anything is written when ``target_dir`` may not be replaced (see
    :func:`check_output`).
    """
    target = check_output(target_dir, kind, force=force, protected=protected)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        _write_marker(staging, kind)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def course_folder(
    target_dir: str | Path, kind: str, force: bool = False, protected: Iterable[str | Path | None] = ()
) -> Path:
    """A folder the course fills over time (executed lessons, a run's checkpoints), created with its marker.

    Checked as :func:`staged_output` checks its target; ``force`` adopts a folder the course did not make
    instead of replacing it. Write each file in it through :func:`staged_file`.
    """
    target = check_output(target_dir, kind, force=force, protected=protected)
    target.mkdir(parents=True, exist_ok=True)
    if not is_course_output(target, kind):
        _write_marker(target, kind)
    return target


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed over ``path`` on normal exit, removed on an exception."""
    path = Path(path)
    handle, partial = tempfile.mkstemp(prefix=f".{path.stem}.partial-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(partial)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
