"""Downloading the real model through a hub mirror (``HF_ENDPOINT``) or from ModelScope, against local servers that
speak each hub's protocol (tests/fake_hubs.py): the real clients do the transfer, nothing leaves this machine."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import constants

from course_utils import hub as course_hub
from course_utils import model_download
from course_utils.__main__ import main
from course_utils.model_download import (
    DEFAULT_MODEL_REPO, DOWNLOAD_RECORD_FILE, ModelDownloadError, download_model, finished_download,
)
from course_utils.outputs import MARKER_FILE, OutputRefused
from course_utils.tiny_model import resolve_model_path
from fake_hubs import HuggingFaceHub, ModelScopeHub, Repo

FAKE_TOKEN = "hf_courseTestTokenThatMustNeverBePrinted"
WEIGHTS = "model.safetensors"
SOURCES = ("huggingface", "modelscope")
CHUNK = 2**16


def model_files() -> dict[str, bytes]:
    """An InternVL2-shaped repository, small: its weights are 300 kB of distinct bytes."""
    return {
        "config.json": json.dumps({"model_type": "internvl_chat"}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 8192}',
        WEIGHTS: bytes(range(256)) * 1200,
        "examples/image1.jpg": b"\xff\xd8 not really a jpeg",
    }


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No learner settings, tokens or saved logins; a RUN_DIR and hub caches of the test's own."""
    for name in ("MODEL_PATH", "DATA_ROOT", "MODEL_SOURCE", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                 "MODELSCOPE_API_TOKEN", "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub writes what it receives in chunks (10 MB); a real model file is many of them, so is this one.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)


@pytest.fixture(params=SOURCES)
def source_hub(request, clean_env, monkeypatch):
    """A local hub of each kind, set as the learner would: ``HF_ENDPOINT`` or ``MODEL_SOURCE=modelscope``."""
    source = request.param
    with (ModelScopeHub() if source == "modelscope" else HuggingFaceHub()) as hub:
        hub.models[DEFAULT_MODEL_REPO] = Repo(model_files())
        if source == "modelscope":
            monkeypatch.setenv("MODEL_SOURCE", "modelscope")
            monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
        else:
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield source, hub


def assert_is_the_model(folder):
    for name, data in model_files().items():
        assert (folder / name).read_bytes() == data, name


def test_the_mirror_or_modelscope_delivers_the_model_into_run_dir(source_hub, tmp_path):
    source, hub = source_hub
    folder = download_model()
    assert folder == (tmp_path / "run" / "models" / "InternVL2-2B").resolve()
    assert_is_the_model(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MARKER_FILE, DOWNLOAD_RECORD_FILE, "config.json", "tokenizer_config.json", WEIGHTS, "examples"])
    record = finished_download(folder, DEFAULT_MODEL_REPO)
    assert record["source"] == source and record["endpoint"] == hub.url
    assert sorted(p.name for p in folder.parent.iterdir()) == ["InternVL2-2B"]  # no hidden download folder left
    assert hub.requests_for(WEIGHTS) or hub.requests_for("/lfs/")


def test_through_a_mirror_every_byte_comes_from_the_mirror(clean_env, monkeypatch):
    """huggingface.co marks large files for Xet, whose servers ignore HF_ENDPOINT: through a mirror, Xet is not used."""
    with HuggingFaceHub() as mirror:
        mirror.models[DEFAULT_MODEL_REPO] = Repo(model_files())
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        assert_is_the_model(download_model())
    assert not mirror.requests_for("xet-read-token")
    assert [r.method for r in mirror.requests_for("/lfs/")] == ["GET"]
    assert constants.HF_HUB_DISABLE_XET is False  # set for the download only


def test_model_path_download_and_a_model_id_both_give_the_downloaded_folder(source_hub, monkeypatch):
    _, hub = source_hub
    monkeypatch.setenv("MODEL_PATH", "download")
    folder = resolve_model_path()
    hub.requests.clear()
    assert resolve_model_path(DEFAULT_MODEL_REPO) == folder  # a finished download is reused...
    assert hub.requests == []  # ...without asking the hub


def test_the_command_says_where_the_model_came_from_and_how_to_use_it(source_hub, capsys):
    source, hub = source_hub
    assert main(["download-model"]) == 0
    out = capsys.readouterr().out.splitlines()
    name = course_hub.SOURCE_NAMES[source]
    folder = download_model()
    assert out[0] == f"downloading {DEFAULT_MODEL_REPO} from {name} ({hub.url}) into {folder}"
    assert out[-2:] == [f"{DEFAULT_MODEL_REPO}: {folder} (from {name}, {hub.url})",
                        "to use it in the lessons: export MODEL_PATH=download"]


def test_a_gated_model_without_a_token_is_one_line_naming_the_fix(source_hub, capsys, tmp_path):
    source, hub = source_hub
    hub.models[DEFAULT_MODEL_REPO].gated = True
    assert main(["download-model"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error" in line.lower()]
    token_help = "HF_TOKEN" if source == "huggingface" else "MODELSCOPE_API_TOKEN"
    assert line.startswith(f"error: {DEFAULT_MODEL_REPO} on {hub.url} is only served to signed-in users")
    assert token_help in line and f"{DEFAULT_MODEL_REPO}" in line.split("accept them on ")[1]
    assert not (tmp_path / "run" / "models" / "InternVL2-2B").exists()


def save_login(source: str, tmp_path, endpoint: str) -> None:
    """Store FAKE_TOKEN as each hub's own CLI login does."""
    if source == "huggingface":
        (tmp_path / "hf-home").mkdir()
        (tmp_path / "hf-home" / "token").write_text(FAKE_TOKEN)
    else:
        from modelscope_hub import HubConfig

        HubConfig(endpoint=endpoint).save_token(FAKE_TOKEN)  # what `modelscope login` keeps, in MODELSCOPE_HOME


@pytest.mark.parametrize("where", ["environment", "saved login"])
def test_the_token_is_sent_but_never_printed(source_hub, monkeypatch, capsys, tmp_path, where):
    source, hub = source_hub
    hub.models[DEFAULT_MODEL_REPO].gated = True
    hub.models[DEFAULT_MODEL_REPO].granted = {FAKE_TOKEN}
    if where == "environment":
        monkeypatch.setenv("HF_TOKEN" if source == "huggingface" else "MODELSCOPE_API_TOKEN", FAKE_TOKEN)
    else:
        save_login(source, tmp_path, hub.url)
    assert main(["download-model"]) == 0
    file_requests = hub.requests_for(WEIGHTS if source == "modelscope" else "/resolve/")
    assert file_requests and all(request.token == FAKE_TOKEN for request in file_requests)
    hub.models[DEFAULT_MODEL_REPO].granted = set()  # access withdrawn: the refusal names no token either
    assert main(["download-model", str(tmp_path / "second")]) == 1
    captured = capsys.readouterr()
    assert f"error: your {course_hub.SOURCE_NAMES[source]} token has no access to {DEFAULT_MODEL_REPO}" \
        in captured.err
    assert FAKE_TOKEN not in captured.out + captured.err


def test_an_interrupted_hugging_face_download_resumes_in_the_next_run(clean_env, monkeypatch, capsys, tmp_path):
    with HuggingFaceHub() as mirror:
        mirror.models[DEFAULT_MODEL_REPO] = Repo(model_files())
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        mirror.cut_next(WEIGHTS, after_bytes=2 * CHUNK)
        assert main(["download-model"]) == 1
        err = capsys.readouterr().err
        assert f"error: the download from {mirror.url} stopped (ChunkedEncodingError): run it again, it resumes" in err
        assert not (tmp_path / "run" / "models" / "InternVL2-2B").exists()
        mirror.requests.clear()
        assert_is_the_model(download_model())
    [resumed] = mirror.requests_for("/lfs/")
    assert resumed.headers["range"] == f"bytes={2 * CHUNK}-"  # only the missing part was asked for


def test_a_dropped_modelscope_connection_resumes_where_it_stopped(clean_env, monkeypatch):
    with ModelScopeHub() as modelscope:
        modelscope.models[DEFAULT_MODEL_REPO] = Repo(model_files())
        monkeypatch.setenv("MODEL_SOURCE", "modelscope")
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", modelscope.url)
        modelscope.cut_next(WEIGHTS, after_bytes=100_000)
        assert_is_the_model(download_model())
    ranges = [request.headers.get("range") for request in modelscope.requests_for(f"FilePath={WEIGHTS}")]
    assert ranges == [None, "bytes=100000-"]


def test_a_failed_modelscope_run_leaves_its_bytes_for_the_next_run(clean_env, monkeypatch, tmp_path):
    with ModelScopeHub() as modelscope:
        modelscope.models[DEFAULT_MODEL_REPO] = Repo(model_files())
        monkeypatch.setenv("MODEL_SOURCE", "modelscope")
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", modelscope.url)
        modelscope.cut_next(WEIGHTS, after_bytes=100_000, then_status=403)  # and the client's retry is refused
        with pytest.raises(ModelDownloadError, match="run it again, it resumes"):
            download_model()
        modelscope.requests.clear()
        assert_is_the_model(download_model())
    [resumed] = modelscope.requests_for(f"FilePath={WEIGHTS}")
    assert resumed.headers["range"] == "bytes=100000-"


def test_a_folder_the_course_did_not_make_is_refused_before_any_request(source_hub, tmp_path):
    _, hub = source_hub
    mine = tmp_path / "my-models"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputRefused, match="did not make"):
        download_model(dest=mine)
    assert hub.requests == [] and (mine / "notes.txt").read_text() == "mine"
    assert_is_the_model(download_model(dest=mine, force=True))
    assert not (mine / "notes.txt").exists()


def test_ctrl_c_keeps_what_arrived_and_says_how_to_resume(source_hub, monkeypatch, capsys, tmp_path):
    source, _ = source_hub
    real_fetch = getattr(model_download, f"fetch_from_{source}")

    def fetch_then_ctrl_c(repo_id, folder, endpoint):
        real_fetch(repo_id, folder, endpoint)
        raise KeyboardInterrupt

    monkeypatch.setattr(model_download, f"fetch_from_{source}", fetch_then_ctrl_c)
    assert main(["download-model"]) == 130
    assert capsys.readouterr().err.endswith("error: interrupted; the files received so far are kept: run the same "
                                            "command again to resume\n")
    models = tmp_path / "run" / "models"
    assert [p.name for p in models.iterdir()] == [".InternVL2-2B.download"]
    assert (models / ".InternVL2-2B.download" / WEIGHTS).read_bytes() == model_files()[WEIGHTS]


def test_a_bad_model_id_fails_before_any_download(clean_env, capsys):
    assert main(["download-model", "--repo", "not-an-id"]) == 1
    assert capsys.readouterr().err == ("error: 'not-an-id' is not a model id: give one as owner/name, e.g. "
                                       f"{DEFAULT_MODEL_REPO}\n")


def test_an_unknown_model_source_is_one_line(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_SOURCE", "github")
    assert main(["download-model"]) == 1
    assert capsys.readouterr().err == ("error: MODEL_SOURCE='github' is not a model source: use huggingface or "
                                       "modelscope\n")


def test_an_unreachable_hub_is_named_with_the_other_sources(clean_env, monkeypatch):
    with HuggingFaceHub() as gone:
        url = gone.url
    monkeypatch.setenv("HF_ENDPOINT", url)  # its port is closed now
    with pytest.raises(ModelDownloadError, match=f"{url} could not be reached .* MODEL_SOURCE=modelscope"):
        download_model()


def test_endpoints_are_read_when_the_download_starts(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "www.modelscope.cn")
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    assert course_hub.hf_endpoint() == "https://hf-mirror.com"
    assert course_hub.modelscope_endpoint() == "https://www.modelscope.cn"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    assert course_hub.source_endpoint("modelscope") == "http://127.0.0.1:9"
