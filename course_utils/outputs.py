"""The one rule for everything the course writes: staged, marked, and never over a folder it did not make.

Every writer (models, datasets, prepared data, checkpoints, converted models, results, executed notebooks) goes
through :func:`staged_output` (or, for a folder filled file by file, :func:`course_folder` + :func:`staged_file`):

* the files are written into a staging folder next to the target and moved into place only when complete, so an
  error or an interrupt leaves the previous output as it was, never a half-written mix; Ctrl-C and SIGTERM wait
  for the final swap to finish, and what a killed run left behind is cleaned up by the next run for that target;
* new folders and files get the permissions the umask gives, as ``mkdir`` would;
* a full disk is one clear error; a mount point is refused (a folder is replaced by renaming, which a mount point
  cannot be);
* a marker file (:data:`MARKER_FILE`) in each finished folder says that the course made it and of what kind;
* an existing folder is replaced only when it is empty or a course output of the same kind; anything else is
  refused before any work, unless ``force=True``;
* even with ``force``, the command's inputs (``protected``: a source dataset, a base model), the learner's
  ``MODEL_PATH`` and ``DATA_ROOT``, and folders such as the home directory or the course checkout are never
  replaced, nor any folder that holds one of them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import CourseError

MARKER_FILE = ".course-output.json"


class OutputRefused(CourseError, ValueError):
    """The course will not write to this folder; the message says why and what to do instead."""


class DiskFull(CourseError, OSError):
    """The disk filled up while an output was written; the previous output is unchanged."""


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


def _configured_sources() -> list[str]:
    """The learner's own model and data (``MODEL_PATH``, ``DATA_ROOT``): inputs of every lesson, so never outputs."""
    from .paths import env_path

    values = [env_path("MODEL_PATH"), env_path("DATA_ROOT")]
    return [value for value in values if value and Path(value).expanduser().exists()]


def _overlaps(target: Path, other: Path) -> bool:
    return target == other or target in other.parents or other in target.parents


def check_output(
    target: str | Path, kind: str, force: bool = False, protected: Iterable[str | Path | None] = ()
) -> Path:
    """The resolved ``target`` if :func:`staged_output` may write it; :class:`OutputRefused` otherwise.

    Call it before any long work so that a refused folder costs the learner nothing.
    """
    target = Path(target).expanduser().resolve()
    for source in [*filter(None, protected), *_configured_sources()]:
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
    if target.is_mount():
        raise OutputRefused(f"{target} is a mount point: the course replaces an output folder whole by renaming, "
                            "which a mount point cannot be; choose a folder inside it")
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
        raise PermissionError(
            f"cannot write in {folder} ({error.strerror}): choose an output folder you can write to"
        ) from error


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _staging_prefix(name: str, role: str) -> str:
    """A hidden sibling's name prefix; the process id lets a later run tell a killed run's leftovers from a live
    run's folders."""
    return f".{name}.{role}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_leftovers(target: Path) -> None:
    """Clean what a killed run for ``target`` left beside it: its staging folder, and an output it had swapped out
    (put back when the target is missing, removed when the new one made it into place)."""
    if not target.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(staging|previous)-(\d+)-")
    for path in target.parent.iterdir():
        match = pattern.match(path.name)
        if match is None or _process_alive(int(match[2])):
            continue
        if match[1] == "previous" and not target.exists() and not target.is_symlink():
            path.rename(target)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them: a swap is never left half done."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    received: list[int] = []
    handlers = {number: signal.signal(number, lambda number, _: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing target is swapped out first and removed only afterwards."""
    with _signals_deferred():
        if not target.exists() and not target.is_symlink():
            staging.rename(target)
            return
        previous = Path(tempfile.mkdtemp(prefix=_staging_prefix(target.name, "previous"), dir=target.parent))
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


def _disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or an error behind it) says the disk is full; libraries such as safetensors report it
    in their own exception types, with the operating system's words."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def staged_output(
    target_dir: str | Path, kind: str, force: bool = False, protected: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Write an output folder safely: ``with staged_output(out, kind="dataset") as staging: ...``.

    Yields an empty staging folder next to ``target_dir``. On normal exit the staging folder, with its marker,
    replaces ``target_dir``; on an exception it is removed and ``target_dir`` is left untouched. Raises
    :class:`OutputRefused` before anything is written when ``target_dir`` may not be replaced (see
    :func:`check_output`), and :class:`DiskFull` when the disk fills up.
    """
    _remove_leftovers(Path(target_dir).expanduser().resolve())
    target = check_output(target_dir, kind, force=force, protected=protected)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target.name, "staging"), dir=target.parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the output is an ordinary folder
        yield staging
        _write_marker(staging, kind)
        _move_into_place(staging, target)
    except Exception as error:
        if _disk_full(error):
            free = shutil.disk_usage(target.parent).free
            raise DiskFull(f"the disk holding {target.parent} is full ({free / 2**20:.0f} MiB free) while writing "
                           f"{target.name}: nothing was changed there; free some space, or choose an output folder "
                           "on another disk") from error
        raise
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
    os.chmod(partial, 0o666 & ~_umask())  # mkstemp makes it private (0600); the output is an ordinary file
    try:
        yield Path(partial)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
