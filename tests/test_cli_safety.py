"""What a careless learner does, case by case: nothing is lost, each mistake is one `error:` line and a non-zero exit,
and no output is ever half-written. Commands run in-process through the CLI's own `main`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course_utils.__main__ import main
from course_utils import hub
from course_utils.foodieqa import convert, load_manifest, make_synthetic_foodieqa
from course_utils.outputs import MARKER_FILE, is_course_output
from course_utils.paths import project_root


def run(capsys, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``python -m course_utils ARGS``."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status: int, err: str, *phrases: str) -> None:
    assert status != 0
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # tqdm bars aside
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Staging or swapped-out folders (hidden names) left next to outputs."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, Path("FoodieQA") / path.relative_to(folder))
    return archive


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("DATA_ROOT", raising=False)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    return tmp_path / "run"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A FoodieQA folder the course did not make (a learner's real download): no marker."""
    built = make_synthetic_foodieqa(tmp_path_factory.mktemp("built") / "FoodieQA", dishes=6, seed=0)
    real = tmp_path_factory.mktemp("learner") / "FoodieQA"
    shutil.copytree(built, real)
    (real / MARKER_FILE).unlink()
    return real


@pytest.fixture
def foreign_folder(tmp_path) -> Path:
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("three years of work")
    return folder


# ---------------------------------------------------------------------------------------- issue table, row by row
def test_make_tiny_model_refuses_a_folder_of_unrelated_files(capsys, foreign_folder):
    status, _, err = run(capsys, "make-tiny-model", str(foreign_folder))
    assert_one_error_line(status, err, "did not make", "--force")
    assert digests(foreign_folder) == {"thesis.tex": hashlib.sha256(b"three years of work").hexdigest()}
    assert leftovers(foreign_folder.parent) == []


def test_make_synthetic_refuses_a_real_foodieqa(capsys, release):
    before = digests(release)
    status, _, err = run(capsys, "make-synthetic-foodieqa", str(release), "--dishes", "2")
    assert_one_error_line(status, err, "did not make")
    assert digests(release) == before


def test_a_failed_prepare_rerun_keeps_the_earlier_output_whole(capsys, release, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    assert run(capsys, "prepare-foodieqa", str(release), str(out), "--seed", "1")[0] == 0
    before = digests(out)
    real_write = convert._write_json

    def fail_on_test_file(path, data):
        if path.name == convert.TEST_FILE:
            raise PermissionError(f"cannot write {path.name}")
        real_write(path, data)

    monkeypatch.setattr(convert, "_write_json", fail_on_test_file)
    status, _, err = run(capsys, "prepare-foodieqa", str(release), str(out), "--seed", "2")
    assert_one_error_line(status, err, "cannot write test.json")
    assert digests(out) == before  # the seed-1 output, complete: no seed-2 train.json beside it
    assert leftovers(tmp_path) == []


def test_a_second_different_zip_is_unzipped_on_its_own(capsys, release, tmp_path, run_dir):
    first = zip_folder(release, tmp_path / "first.zip")
    other = make_synthetic_foodieqa(tmp_path / "other" / "FoodieQA", dishes=4, seed=9)
    (tmp_path / "downloads").mkdir()
    second = zip_folder(other, tmp_path / "downloads" / "first.zip")  # the same file name, other content
    assert run(capsys, "prepare-foodieqa", str(first), str(tmp_path / "out1"))[0] == 0
    assert run(capsys, "prepare-foodieqa", str(second), str(tmp_path / "out2"))[0] == 0
    one, two = load_manifest(tmp_path / "out1"), load_manifest(tmp_path / "out2")
    assert one["image_folder"] != two["image_folder"]
    assert (one["counts"]["records"], two["counts"]["records"]) == (6 * 3 * 4, 4 * 3 * 4)
    assert json.loads((Path(two["image_folder"]) / "sivqa_tidy.json").read_text()) == json.loads(
        (other / "sivqa_tidy.json").read_text())
    assert run(capsys, "prepare-foodieqa", str(first), str(tmp_path / "out3"))[0] == 0  # the first unzip, reused
    assert load_manifest(tmp_path / "out3")["image_folder"] == one["image_folder"]
    assert len(list((run_dir / "data" / "foodieqa").iterdir())) == 2


def test_an_empty_source_is_an_error_not_the_synthetic_set(capsys, tmp_path, run_dir):
    status, _, err = run(capsys, "prepare-foodieqa", "", str(tmp_path / "out"))
    assert_one_error_line(status, err, "SRC is empty")
    assert not (tmp_path / "out").exists() and not (run_dir / "data").exists()


def test_zero_images_per_dish_writes_nothing(capsys, tmp_path):
    status, _, err = run(capsys, "make-synthetic-foodieqa", str(tmp_path / "out"), "--images-per-dish", "0")
    assert_one_error_line(status, err, "at least 1")
    assert not (tmp_path / "out").exists()


def bad_json(folder: Path) -> Path:
    folder.mkdir()
    (folder / "sivqa_tidy.json").write_text("{not json")
    return folder


def wrong_shape(folder: Path) -> Path:
    folder.mkdir()
    (folder / "sivqa_tidy.json").write_text('{"questions": []}')
    return folder


@pytest.mark.parametrize(
    ("make_source", "extra", "phrase"),
    [
        (bad_json, [], "not valid UTF-8 JSON"),
        (wrong_shape, [], "must hold a JSON list"),
        (lambda folder: folder, [], "does not exist"),
        (lambda folder: folder, ["--test-fraction", "1.5"], "between 0 and 1"),
    ],
    ids=["non-json", "wrong-shape", "missing-folder", "test-fraction"],
)
def test_bad_prepare_input_is_one_line_and_creates_nothing(capsys, tmp_path, release, make_source, extra, phrase):
    source = release if extra else make_source(tmp_path / "source")
    status, _, err = run(capsys, "prepare-foodieqa", str(source), str(tmp_path / "out"), *extra)
    assert_one_error_line(status, err, phrase)
    assert not (tmp_path / "out").exists()


def test_the_test_fraction_is_checked_before_any_image(capsys, tmp_path, release, monkeypatch):
    monkeypatch.setattr(convert, "validate_foodieqa", lambda *a: pytest.fail("validated before checking arguments"))
    status, _, err = run(capsys, "prepare-foodieqa", str(release), str(tmp_path / "out"), "--test-fraction", "1.5")
    assert_one_error_line(status, err, "between 0 and 1")


def test_negative_dishes_is_one_line(capsys, tmp_path):
    status, _, err = run(capsys, "make-synthetic-foodieqa", str(tmp_path / "out"), "--dishes", "-3")
    assert_one_error_line(status, err, "dishes must be between 1 and")
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_one_line_before_any_work(
    capsys, tmp_path, release, monkeypatch, refuse_writes_in
):
    locked = tmp_path / "locked"
    locked.mkdir()
    refuse_writes_in(locked)
    monkeypatch.setattr(convert, "validate_foodieqa", lambda *a: pytest.fail("validated before checking the output"))
    status, _, err = run(capsys, "prepare-foodieqa", str(release), str(locked / "out"))
    assert_one_error_line(status, err, f"cannot write in {locked}")
    assert list(locked.iterdir()) == []


def test_a_missing_notebook_path_is_one_line(capsys, tmp_path):
    status, _, err = run(capsys, "run-notebook", "notebooks/99_missing.ipynb", "--out", str(tmp_path / "out"))
    assert_one_error_line(status, err, "no single notebook matches", "00_setup_check")
    assert not (tmp_path / "out").exists()


def test_download_offline_asks_the_network_once_and_says_so_once(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    probes = []

    def unreachable(address, timeout):
        probes.append(address)
        raise OSError("Name or service not known")

    def no_http(*args, **kwargs):
        pytest.fail("huggingface_hub made a request although the hub was found unreachable")

    import requests

    monkeypatch.setattr(hub, "_reachable", {})
    monkeypatch.setattr(hub.socket, "create_connection", unreachable)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(requests.Session, "request", no_http)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for _ in range(2):
        status, _, err = run(capsys, "download-foodieqa", "--dest", str(tmp_path / "data"))
        assert status == 1 and "Traceback" not in err
        first, *rest = err.splitlines()
        assert first.startswith("error: Could not download FoodieQA: https://huggingface.co could not be reached "
                                "(offline?)")
        assert "reached" not in "\n".join(rest)  # said once
    assert len(probes) == 1  # detected once per process
    assert not (tmp_path / "data").exists()


def test_doctor_says_what_is_wrong_with_model_path_and_data_root(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "nowhere" / "InternVL2-2B"))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "nowhere" / "FoodieQA"))
    status, out, err = run(capsys, "doctor")
    assert status == 1 and "Traceback" not in err
    assert err.splitlines() == [
        f"error: MODEL_PATH={tmp_path}/nowhere/InternVL2-2B does not exist: point it at a downloaded InternVL2 "
        "folder (e.g. InternVL2-2B), a model id or 'download', or unset it for the embedded tiny model",
        f"error: DATA_ROOT={tmp_path}/nowhere/FoodieQA does not exist: point it at the unzipped FoodieQA folder or "
        "FoodieQA.zip, set it to 'download', or unset it for the synthetic FoodieQA",
    ]
    assert "Problems" in out


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_the_output_folder_is_never_the_input_folder(capsys, release, force):
    before = digests(release)
    for out in (release, release / "prepared"):
        status, _, err = run(capsys, "prepare-foodieqa", str(release), str(out), *force)
        assert_one_error_line(status, err, "never writes into its own input")
    assert digests(release) == before


# ------------------------------------------------------------------------------------------------ the error path
def test_a_learner_error_exits_non_zero_without_a_traceback_and_debug_shows_it(tmp_path):
    command = [sys.executable, "-m", "course_utils", "make-synthetic-foodieqa", str(tmp_path / "out"), "--dishes", "-3"]
    plain = subprocess.run(command, cwd=project_root(), capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stderr.startswith("error: dishes must be between 1 and")
    assert "Traceback" not in plain.stderr
    debug = subprocess.run([*command, "--debug"], cwd=project_root(), capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ValueError" in debug.stderr


def test_a_real_bug_keeps_its_traceback(capsys, monkeypatch):
    from course_utils import doctor

    monkeypatch.setattr(doctor, "doctor_report", lambda: {}["bug"])
    with pytest.raises(KeyError):
        main(["doctor"])


# ------------------------------------------------------------------------------------ staging on every writer
def test_a_tiny_model_build_that_fails_leaves_the_previous_build(tmp_path, monkeypatch):
    import safetensors.torch

    from course_utils.tiny_model import build_model_dir, is_current_build

    out = build_model_dir(tmp_path / "model")
    before = digests(out)
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        build_model_dir(out, seed=1)
    assert digests(out) == before and is_current_build(out) and is_course_output(out, "built-model")
    assert leftovers(tmp_path) == []


def test_a_synthetic_build_that_fails_leaves_nothing(tmp_path, monkeypatch):
    from course_utils.foodieqa import synthetic

    monkeypatch.setattr(synthetic, "describe_rules", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_foodieqa(tmp_path / "out", dishes=2, images_per_dish=1)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_corrupt_zip_leaves_no_unzip_folder(capsys, tmp_path, run_dir):
    archive = tmp_path / "FoodieQA.zip"
    archive.write_bytes(b"PK\x03\x04 truncated")
    status, _, err = run(capsys, "prepare-foodieqa", str(archive), str(tmp_path / "out"))
    assert_one_error_line(status, err, "delete it and download again")
    assert list((run_dir / "data" / "foodieqa").iterdir()) == []
    assert not (tmp_path / "out").exists()
