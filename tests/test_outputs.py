"""The write rule: staged, marked, never over a folder the course did not make, never over an input."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import SafetensorError

from course_utils.errors import CourseError
from course_utils.outputs import (MARKER_FILE, DiskFull, OutputRefused, check_output, is_course_output, staged_file,
                                  staged_output)
from course_utils.paths import project_root


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


def siblings(path: Path) -> list[str]:
    """Everything next to ``path`` (staging and swapped-out folders would show up here)."""
    return sorted(p.name for p in path.parent.iterdir())


def test_a_new_output_appears_complete_with_its_marker(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        assert staging.parent == tmp_path and staging != target
        assert not target.exists()  # nothing is visible until the work is done
        write(staging, "data.json", "[]")
    assert (target / "data.json").read_text() == "[]"
    assert is_course_output(target) and is_course_output(target, "dataset")
    assert not is_course_output(target, "tiny-model")
    assert siblings(target) == ["out"]


def test_an_error_leaves_the_previous_output_untouched_and_no_staging(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        write(staging, "train.json", "old")
        write(staging, "test.json", "old")
    with pytest.raises(OSError):
        with staged_output(target, kind="dataset") as staging:
            write(staging, "train.json", "new")
            raise OSError("disk full")
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER_FILE, "test.json", "train.json"])
    assert (target / "train.json").read_text() == "old"
    assert siblings(target) == ["out"]


def test_an_interrupt_also_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_output(target, kind="dataset") as staging:
            write(staging, "part.json", "half")
            raise KeyboardInterrupt
    assert siblings(target) == []


def test_a_course_output_of_the_same_kind_is_replaced_whole(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        write(staging, "stale.json", "old")
    with staged_output(target, kind="dataset") as staging:
        write(staging, "fresh.json", "new")
    assert sorted(p.name for p in target.iterdir()) == [MARKER_FILE, "fresh.json"]
    assert siblings(target) == ["out"]


def test_an_empty_folder_is_used(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "1")
    assert is_course_output(target, "dataset")


def test_a_folder_the_course_did_not_make_is_refused_before_any_work(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    write(target, "notes.txt", "precious")
    entered = False
    with pytest.raises(OutputRefused, match="did not make.*--force"):
        with staged_output(target, kind="tiny-model"):
            entered = True
    assert not entered
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert siblings(target) == ["mine"]


def test_a_course_output_of_another_kind_is_refused(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "1")
    with pytest.raises(OutputRefused, match="course dataset, not a tiny-model"):
        check_output(target, "tiny-model")
    assert is_course_output(target, "dataset")


def test_a_file_in_the_way_is_refused(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(OutputRefused, match="is a file"):
        check_output(target, "dataset")


def test_force_replaces_a_foreign_folder(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    write(target, "notes.txt", "replace me")
    with staged_output(target, kind="dataset", force=True) as staging:
        write(staging, "a.json", "1")
    assert sorted(p.name for p in target.iterdir()) == [MARKER_FILE, "a.json"]
    assert siblings(target) == ["mine"]


@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_an_input_is_never_written_even_with_force(tmp_path, where):
    source = tmp_path / "dataset"
    source.mkdir()
    write(source, "sivqa_tidy.json", "[]")
    target = {"same": source, "inside": source / "out", "holding": tmp_path}[where]
    for force in (False, True):
        with pytest.raises(OutputRefused, match="input"):
            check_output(target, "dataset", force=force, protected=[None, str(source)])
    assert sorted(p.name for p in source.iterdir()) == ["sivqa_tidy.json"]


@pytest.mark.parametrize("variable", ["MODEL_PATH", "DATA_ROOT"])
def test_the_learners_model_and_data_are_never_written_even_with_force(tmp_path, monkeypatch, variable):
    source = tmp_path / "InternVL2-2B"
    source.mkdir()
    monkeypatch.setenv(variable, str(source))
    for target in (source, source / "out", tmp_path):
        with pytest.raises(OutputRefused, match="input"):
            check_output(target, "dataset", force=True)
    monkeypatch.setenv(variable, "OpenGVLab/InternVL2-2B")  # a hub id names no folder here
    check_output(tmp_path / "out", "dataset")


@pytest.mark.parametrize("folder", [Path.home(), project_root(), Path("/")])
def test_home_checkout_and_root_are_never_replaced(folder):
    with pytest.raises(OutputRefused):
        check_output(folder, "dataset", force=True)


def test_an_unwritable_place_is_refused_before_any_work(tmp_path, refuse_writes_in):
    refuse_writes_in(tmp_path)
    with pytest.raises(PermissionError, match=f"cannot write in {tmp_path}"):
        check_output(tmp_path / "new" / "out", "dataset")


def test_refusals_are_course_errors_and_value_errors():
    assert issubclass(OutputRefused, CourseError) and issubclass(OutputRefused, ValueError)


def test_a_broken_marker_is_not_a_course_output(tmp_path):
    write(tmp_path, MARKER_FILE, "not json")
    assert not is_course_output(tmp_path)
    write(tmp_path, MARKER_FILE, '{"no": "kind"}')
    assert not is_course_output(tmp_path)
    assert not is_course_output(tmp_path / "missing")


def test_a_failed_swap_puts_the_previous_output_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "old")
    real_rename = Path.rename

    def rename(self, new):
        if Path(new) == target and ".staging-" in self.name:
            raise OSError("rename failed")
        return real_rename(self, new)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        with staged_output(target, kind="dataset") as staging:
            write(staging, "a.json", "new")
    assert (target / "a.json").read_text() == "old"
    assert siblings(target) == ["out"]


def replace_with_a_signal_during_the_swap(target: Path, monkeypatch, signal_number: int) -> None:
    """Replace ``target``'s output, with ``signal_number`` arriving the moment the new folder is renamed into place."""
    real_rename = Path.rename

    def rename(self, new):
        moved = real_rename(self, new)
        if Path(new) == target and ".staging-" in self.name:
            os.kill(os.getpid(), signal_number)
        return moved

    monkeypatch.setattr(Path, "rename", rename)
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "new")


def test_ctrl_c_during_the_swap_waits_for_it_to_finish(tmp_path, monkeypatch):
    """Issue 22 row 8: the interrupt is delivered after the swap, never in the middle of it."""
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "old")
    # Python's own Ctrl-C handler, whatever an earlier test in this process installed (a kernel client, a server)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            replace_with_a_signal_during_the_swap(target, monkeypatch, signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (target / "a.json").read_text() == "new"
    assert siblings(target) == ["out"]


KILLED_WRITER = """
import os, signal, sys
from course_utils.outputs import staged_output
with staged_output(sys.argv[1], kind="dataset") as staging:
    (staging / "part.json").write_text("half")
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill` does: no Python code runs after it
"""


def test_a_killed_runs_staging_is_cleaned_by_the_next_run(tmp_path):
    """Issue 22 row 10: SIGTERM leaves a staging folder behind; the next run for the same target removes it."""
    target = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=project_root(), timeout=120)
    assert killed.returncode == -signal.SIGTERM
    assert [name for name in siblings(target) if ".staging-" in name]
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "whole")
    assert siblings(target) == ["out"]


def test_an_output_a_killed_swap_left_aside_is_put_back(tmp_path):
    """Issue 22 row 8: a run killed between its two renames left the old output in a hidden folder; the next run
    puts it back before anything else, so even a failing next run leaves it in place."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its process id is no longer running
    target = tmp_path / "out"
    with staged_output(tmp_path / "elsewhere", kind="dataset") as staging:
        write(staging, "a.json", "old")
    (tmp_path / "elsewhere").rename(tmp_path / f".out.previous-{finished.pid}-x")
    with pytest.raises(RuntimeError):
        with staged_output(target, kind="dataset"):
            raise RuntimeError("the next run fails too")
    assert (target / "a.json").read_text() == "old"
    assert siblings(target) == ["out"]


def test_new_folders_and_files_follow_the_umask(tmp_path):
    """Issue 22 row 10: not the private 0700 / 0600 of temporary folders and files."""
    old = os.umask(0o022)
    try:
        with staged_output(tmp_path / "out", kind="dataset") as staging:
            write(staging, "a.json", "1")
        with staged_file(tmp_path / "out" / "b.json") as partial:
            partial.write_text("2")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "b.json").stat().st_mode) == 0o644


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="needs /dev/shm mounted")
def test_a_mount_point_is_refused_before_any_work():
    """Issue 22 row 9: a folder is replaced by renaming, which a mount point cannot be."""
    with pytest.raises(OutputRefused, match="is a mount point"):
        check_output("/dev/shm", "dataset", force=True)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
                    'device" })'),
])
def test_a_full_disk_is_one_clear_error_and_the_old_output_stays(tmp_path, error):
    """Issue 22 row 9: however the writing library reports it."""
    target = tmp_path / "out"
    with staged_output(target, kind="dataset") as staging:
        write(staging, "a.json", "old")
    with pytest.raises(DiskFull, match=f"the disk holding {tmp_path} is full") as raised:
        with staged_output(target, kind="dataset"):
            raise error
    assert isinstance(raised.value, CourseError) and "\n" not in str(raised.value)
    assert (target / "a.json").read_text() == "old" and siblings(target) == ["out"]


def test_a_run_dir_that_cannot_be_made_is_one_error_line(tmp_path, monkeypatch, capsys):
    """Issue 22 row 9: ``doctor`` with RUN_DIR on a read-only filesystem."""
    from course_utils.__main__ import main

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setenv("RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["doctor"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot create the run folder {tmp_path / 'runs'} (Read-only file system)")
    assert error.count("\n") == 1
