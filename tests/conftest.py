"""Shared fixtures: one run directory per test session, and executed lessons cached per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest


def pytest_collection_modifyitems(items):
    """Every test that executes a lesson is a ``notebook`` test (``-m "not notebook"`` skips the slow ones)."""
    for item in items:
        if "executed_notebook" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.notebook)


@pytest.fixture(scope="session")
def session_run_dir(tmp_path_factory) -> Iterator[Path]:
    """A RUN_DIR for the whole test session, so the embedded model and data are built once.

    MODEL_PATH and DATA_ROOT are unset meanwhile (tests use the embedded default, never a learner's real
    weights); all three variables are restored at the end of the session.
    """
    path = tmp_path_factory.mktemp("run")
    saved = {name: os.environ.get(name) for name in ("RUN_DIR", "MODEL_PATH", "DATA_ROOT")}
    os.environ["RUN_DIR"] = str(path)
    for name in ("MODEL_PATH", "DATA_ROOT"):
        os.environ.pop(name, None)
    yield path
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# A translation's lesson 04 trains one epoch in CI: its code runs whole, in a run folder of the edition's own, and
# the full run's figures are the first edition's (the same code); `make course` runs every edition in full.
TRANSLATION_CI_PARAMETERS = {"04": {"MAX_EPOCHS": 1}}


@pytest.fixture(scope="session")
def executed_notebook(session_run_dir, tmp_path_factory):
    """``executed_notebook("03")`` executes that lesson once per session; returns (path, recorded figures).

    ``executed_notebook("03", "zh-CN")`` executes its translation, in a run folder of its own. The executed copies
    lie as `make course` leaves them: ``executed_notebook.out_dir``, a translation's in its sub-folder.
    """
    from course_utils.course_run import execute_notebook, find_notebook, recorded_figures
    from course_utils.paths import FIRST_EDITION, edition_subfolder

    out_dir = tmp_path_factory.mktemp("executed")
    run_folders: dict[str, Path] = {}
    cache: dict[tuple[str, str], tuple[Path, dict]] = {}

    def run(name: str, edition: str = FIRST_EDITION):
        if (name, edition) not in cache:
            if edition == FIRST_EDITION:
                path = execute_notebook(name, out_dir)
            else:
                run_folder = run_folders.setdefault(edition, tmp_path_factory.mktemp(f"run-{edition}"))
                path = execute_notebook(find_notebook(name, edition), out_dir / edition_subfolder(edition),
                                        parameters=TRANSLATION_CI_PARAMETERS.get(name[:2]),
                                        env={"RUN_DIR": str(run_folder)})
            cache[name, edition] = (path, recorded_figures(path))
        return cache[name, edition]

    run.out_dir = out_dir
    return run


@pytest.fixture(scope="session")
def tiny_model_path(session_run_dir) -> Path:
    """The embedded tiny InternVL2 model folder, built once per test session."""
    from course_utils.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_and_tokenizer(tiny_model_path):
    """The tiny model loaded as a learner loads InternVL2: AutoModel + remote code, float32 on CPU."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_model_path, trust_remote_code=True, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, trust_remote_code=True)
    return model, tokenizer


@pytest.fixture(scope="session")
def lmdeploy_parser():
    """LMDeploy's own command-line parser (``lmdeploy serve ...``, ``lmdeploy lite ...``), built once: LMDeploy
    keeps its subcommands in class attributes, so a second build in the same process would clash."""
    from lmdeploy.cli.cli import CLI
    from lmdeploy.cli.lite import SubCliLite
    from lmdeploy.cli.serve import SubCliServe

    CLI.add_parsers()
    SubCliServe.add_parsers()
    SubCliLite.add_parsers()
    return CLI.parser


@pytest.fixture
def refuse_writes_in(monkeypatch):
    """``refuse_writes_in(folder)``: making anything in ``folder`` fails as on a read-only disk.

    Permission bits would not do: CI often runs as root, whom they do not stop.
    """
    import tempfile

    real_mkdtemp = tempfile.mkdtemp

    def refuse(folder: Path) -> None:
        def mkdtemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == Path(folder).resolve():
                raise PermissionError(13, "Permission denied", str(dir))
            return real_mkdtemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)

    return refuse


@pytest.fixture(scope="session")
def lesson04_run(executed_notebook) -> dict:
    """Lesson 04 executed once per session on the default (the tiny base LoRA-fine-tuned through ``xtuner train``,
    interrupted and resumed); returns its run's ``course-finetune.json``, the run lessons 05 and 06 evaluate."""
    from course_utils.training import LESSON_RUN_NAME, load_finetune_manifest

    executed_notebook("04")
    return load_finetune_manifest(LESSON_RUN_NAME)
