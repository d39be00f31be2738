"""The write rule: staged, marked, never over a folder the course did not make, never over an input."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.errors import CourseError
from course_utils.outputs import MARKER_FILE, OutputRefused, check_output, is_course_output, staged_output
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
