"""Downloading the gated FoodieQA: unzip what huggingface_hub returns, and a clear message for each failure.

No test reaches the network: the downloader is replaced by one that returns a local zip or raises
huggingface_hub's own exceptions, the real ``hf_hub_download`` is run in its offline mode, and against a local
server that speaks the hub's protocol as a mirror named by ``HF_ENDPOINT`` (tests/fake_hubs.py).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from course_utils import hub as course_hub
from course_utils.foodieqa import (
    FoodieQADownloadError, FoodieQAFormatError, download_foodieqa, extract_foodieqa_zip, load_sivqa,
    make_synthetic_foodieqa, register_cli, resolve_data_root,
)
from fake_hubs import HuggingFaceHub, Repo

FAKE_TOKEN = "hf_courseTestTokenThatMustNeverBePrinted"
GET_ACCESS = "huggingface.co/datasets/lyan62/FoodieQA"


@pytest.fixture(scope="module")
def release_zip(tmp_path_factory) -> Path:
    """A zip laid out like FoodieQA.zip: everything inside a FoodieQA/ folder."""
    folder = tmp_path_factory.mktemp("release")
    source = make_synthetic_foodieqa(folder / "FoodieQA", dishes=3, seed=0)
    archive = folder / "FoodieQA.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, Path("FoodieQA") / path.relative_to(source))
    return archive


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # ignore a real saved login


@pytest.fixture
def with_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)


def test_downloads_the_zip_with_huggingface_hub_arguments_and_unzips_it(release_zip, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    calls = []

    def downloader(**kwargs):
        calls.append(kwargs)
        return str(release_zip)

    root = download_foodieqa(tmp_path / "data", downloader=downloader)
    assert calls == [{"repo_id": "lyan62/FoodieQA", "filename": "FoodieQA.zip", "repo_type": "dataset",
                      "endpoint": "https://huggingface.co"}]
    assert root.parent.parent == (tmp_path / "data").resolve() and root.name == "FoodieQA"
    assert len(load_sivqa(root)) == 3 * 3 * 4 and (root / "images" / "001_0.jpg").is_file()
    assert [p.name for p in (tmp_path / "data").iterdir()] == [root.parent.name]  # no staging left


def test_a_downloaded_copy_is_reused_without_downloading(release_zip, tmp_path):
    first = download_foodieqa(tmp_path, downloader=lambda **kwargs: str(release_zip))

    def must_not_download(**kwargs):
        raise AssertionError("downloaded again")

    assert download_foodieqa(tmp_path, downloader=must_not_download) == first


def test_a_zip_given_by_hand_is_not_taken_for_the_download(release_zip, tmp_path):
    extract_foodieqa_zip(release_zip, tmp_path)
    with pytest.raises(FoodieQADownloadError):
        download_foodieqa(tmp_path, downloader=raiser(LocalEntryNotFoundError("not in the cache")))


def raiser(error: Exception):
    def downloader(**kwargs):
        raise error

    return downloader


@pytest.mark.parametrize(
    "error, token, phrase",
    [
        (GatedRepoError("401 Client Error. Access to dataset lyan62/FoodieQA is restricted."), False,
         "no Hugging Face token was found"),
        (GatedRepoError("403 Client Error. Access to dataset lyan62/FoodieQA is restricted."), True,
         "has no access to lyan62/FoodieQA yet"),
        (RepositoryNotFoundError("401 Client Error. Invalid credentials"), True, "refused the token"),
        (LocalEntryNotFoundError("cannot find the requested files in the local cache"), True,
         "could not be reached (offline?)"),
        (EntryNotFoundError("404 Client Error. Entry not found"), True, "has no file FoodieQA.zip"),
        (ConnectionError("Max retries exceeded"), False, "could not be reached (offline?)"),
    ],
)
def test_each_failure_says_why_and_how_to_get_access(request, tmp_path, error, token, phrase):
    request.getfixturevalue("with_token" if token else "no_token")
    with pytest.raises(FoodieQADownloadError) as caught:
        download_foodieqa(tmp_path, downloader=raiser(error))
    message = str(caught.value)
    assert phrase in message
    assert GET_ACCESS in message and "HF_TOKEN" in message and "DATA_ROOT" in message
    assert FAKE_TOKEN not in message
    assert caught.value.__cause__ is error


def test_real_hf_hub_download_offline_gives_the_offline_message(monkeypatch, tmp_path, with_token):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(FoodieQADownloadError, match=r"could not be reached \(offline\?\)") as caught:
        download_foodieqa(tmp_path / "data")
    assert isinstance(caught.value.__cause__, LocalEntryNotFoundError)
    assert FAKE_TOKEN not in str(caught.value)


@pytest.fixture
def mirror(monkeypatch, tmp_path, release_zip):
    """A local hub mirror holding the gated FoodieQA, set as ``HF_ENDPOINT``; its reachability probe is recorded."""
    probes = []
    real_connection = course_hub.socket.create_connection

    def probe(address, timeout):
        probes.append(address)
        return real_connection(address, timeout)

    monkeypatch.setattr(course_hub.socket, "create_connection", probe)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with HuggingFaceHub() as hub:
        hub.datasets["lyan62/FoodieQA"] = Repo({"FoodieQA.zip": release_zip.read_bytes()}, gated=True,
                                              granted={FAKE_TOKEN})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.probes = probes
        yield hub


def test_hf_endpoint_names_the_mirror_that_serves_the_dataset(mirror, tmp_path, with_token):
    root = download_foodieqa(tmp_path / "data")
    assert len(load_sivqa(root)) == 3 * 3 * 4
    port = int(mirror.url.rsplit(":", 1)[1])
    assert mirror.probes == [("127.0.0.1", port)]  # the reachability probe asked the mirror, not huggingface.co
    [zip_download] = [r for r in mirror.requests_for("/lfs/") if r.method == "GET"]
    assert zip_download.token == FAKE_TOKEN
    assert not mirror.requests_for("xet-read-token")


def test_a_mirror_refusing_a_user_without_token_says_how_to_get_access(mirror, tmp_path, no_token):
    with pytest.raises(FoodieQADownloadError, match="no Hugging Face token was found") as caught:
        download_foodieqa(tmp_path / "data")
    assert "HF_ENDPOINT=https://hf-mirror.com" in str(caught.value) and FAKE_TOKEN not in str(caught.value)
    assert not (tmp_path / "data").exists()


def test_data_root_download_keyword_fetches_the_release(monkeypatch, tmp_path, release_zip):
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kwargs: str(release_zip))
    root = resolve_data_root("download")
    assert root.parent.parent == (tmp_path / "run" / "data" / "foodieqa").resolve()


def test_cli_download_prints_the_message_and_fails(monkeypatch, tmp_path, capsys, no_token):
    from course_utils.__main__ import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert main(["download-foodieqa", "--dest", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Could not download FoodieQA") and GET_ACCESS in err


@pytest.mark.parametrize(
    "members, phrase",
    [({"../evil.txt": "x"}, "unsafe path"), ({"FoodieQA/readme.txt": "x"}, "holds no sivqa_tidy.json")],
)
def test_unsafe_or_foreign_zips_are_refused(tmp_path, members, phrase):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    with pytest.raises(FoodieQAFormatError, match=phrase):
        extract_foodieqa_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_a_corrupt_zip_asks_for_a_new_download(tmp_path):
    archive = tmp_path / "FoodieQA.zip"
    archive.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FoodieQAFormatError, match="delete it and download again"):
        extract_foodieqa_zip(archive, tmp_path / "out")
