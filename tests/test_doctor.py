"""The doctor's decisions, from injected facts (no GPU needed), and lesson 00 executed in the course kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from course_utils.doctor import (
    NOT_INSTALLED,
    PACKAGES,
    Facts,
    Gpu,
    build_report,
    check_requirements,
    format_report,
    gather_facts,
)
from course_utils.errors import CourseError
from course_utils.paths import project_root, run_dir

H100 = Gpu("NVIDIA H100 80GB HBM3", 79.1)


def make_facts(gpus=(), packages=None, environ=None, token_file=None, modelscope_token_file=None) -> Facts:
    """Facts of a machine with every course package installed, changed where a test says so."""
    return Facts(
        python="3.11.7",
        executable="/envs/course/bin/python",
        packages={name: "1.0" for name in PACKAGES} | (packages or {}),
        torch_cuda_build="12.8",
        gpus=tuple(gpus),
        environ=environ or {},
        hf_token_file=token_file,
        modelscope_token_file=modelscope_token_file,
    )


def test_without_a_gpu_lessons_use_transformers_on_the_cpu_and_the_report_says_so():
    report = build_report(make_facts())
    text = format_report(report)
    assert report.engine == "transformers (CPU)"
    assert report.training == "XTuner on CPU (the tiny model only)"
    assert not report.cuda_available
    assert "no GPU: notebooks use the transformers CPU engine" in text
    assert "GPU           none" in text
    assert "serving       transformers (CPU): no CUDA GPU: LMDeploy needs one" in text  # the auto choice, and why


def test_a_gpu_with_lmdeploy_serves_with_lmdeploy():
    report = build_report(make_facts(gpus=[H100, H100]))
    text = format_report(report)
    assert report.engine == "lmdeploy (GPU)"
    assert "CUDA GPU and LMDeploy found" in text
    assert report.training == "XTuner on 2 GPU(s), DeepSpeed ZeRO available"
    assert "NVIDIA H100 80GB HBM3 (79.1 GiB)" in text
    assert "no GPU" not in text
    assert report.figures()["gpu_count"] == 2


def test_a_gpu_without_lmdeploy_falls_back_to_transformers_and_names_the_fix():
    report = build_report(make_facts(gpus=[H100], packages={"lmdeploy": None, "deepspeed": None}))
    assert report.engine == "transformers (GPU)"
    assert report.training == "XTuner on 1 GPU(s)"
    assert report.versions["lmdeploy"] == NOT_INSTALLED
    assert "`make env` installs it" in format_report(report)


def test_missing_packages_read_not_installed_and_a_missing_torch_stops_the_lesson():
    report = build_report(make_facts(packages={"xtuner": None, "torch": None}))
    assert "xtuner        not installed" in format_report(report)
    assert report.training == NOT_INSTALLED
    with pytest.raises(CourseError, match="make env"):
        check_requirements(report)


def test_require_gpu_stops_only_where_no_gpu_is_visible():
    check_requirements(build_report(make_facts()))
    check_requirements(build_report(make_facts(gpus=[H100])), require_gpu=True)
    with pytest.raises(CourseError, match="require_gpu=True but torch sees no GPU"):
        check_requirements(build_report(make_facts()), require_gpu=True)


def test_model_and_data_come_from_the_environment_and_blank_means_unset():
    report = build_report(make_facts(environ={"MODEL_PATH": "/models/InternVL2-2B", "DATA_ROOT": "  "}))
    assert report.model == "MODEL_PATH=/models/InternVL2-2B"
    assert report.problems == ["MODEL_PATH=/models/InternVL2-2B does not exist: point it at a downloaded InternVL2 "
                               "folder (e.g. InternVL2-2B), a model id or 'download', or unset it for the embedded tiny "
                               "model"]
    assert report.data.startswith("embedded synthetic FoodieQA")
    assert "real InternVL2 weights are slow on a CPU" in format_report(report)
    assert build_report(make_facts()).model.startswith("embedded tiny InternVL2")
    with_data = build_report(make_facts(environ={"DATA_ROOT": "/data/FoodieQA"}))
    assert with_data.data == "DATA_ROOT=/data/FoodieQA"
    assert "slow on a CPU" not in format_report(with_data)


@pytest.mark.parametrize(
    ("environ", "file_text", "expected"),
    [
        ({"HF_TOKEN": "hf_secretvalue123"}, None, "found (env HF_TOKEN)"),
        ({"HUGGING_FACE_HUB_TOKEN": "hf_secretvalue123"}, "hf_other", "found (env HUGGING_FACE_HUB_TOKEN)"),
        ({}, "hf_secretvalue123\n", "found (huggingface-cli login)"),
        ({"HF_TOKEN": " "}, "", "not found"),
        ({}, None, "not found"),
    ],
)
def test_the_hf_token_is_located_but_never_shown(tmp_path, environ, file_text, expected):
    token_file = tmp_path / "token"
    if file_text is not None:
        token_file.write_text(file_text)
    report = build_report(make_facts(environ=environ, token_file=token_file))
    assert report.hf_token == expected
    shown = format_report(report) + json.dumps(report.figures())
    assert "hf_secretvalue123" not in shown


@pytest.mark.parametrize(
    ("environ", "downloads"),
    [
        ({}, "model from Hugging Face, https://huggingface.co; FoodieQA from https://huggingface.co"),
        ({"HF_ENDPOINT": "https://hf-mirror.com/"}, "model from Hugging Face, https://hf-mirror.com (HF_ENDPOINT); "
                                                     "FoodieQA from https://hf-mirror.com (HF_ENDPOINT)"),
        ({"MODEL_SOURCE": "modelscope"}, "model from ModelScope, https://modelscope.cn (MODEL_SOURCE=modelscope); "
                                         "FoodieQA from https://huggingface.co"),
        ({"MODEL_SOURCE": "ModelScope", "MODELSCOPE_ENDPOINT": "http://127.0.0.1:8000"},
         "model from ModelScope, http://127.0.0.1:8000 (MODEL_SOURCE=modelscope); FoodieQA from "
         "https://huggingface.co"),
    ],
)
def test_the_report_says_where_downloads_come_from(environ, downloads):
    report = build_report(make_facts(environ=environ))
    assert f"  downloads     {downloads}" in format_report(report)
    assert report.problems == []


def test_a_model_path_that_downloads_names_the_model_and_its_folder_and_the_mirror():
    report = build_report(make_facts(environ={"MODEL_PATH": "download"}))
    assert report.model == ("MODEL_PATH=download: OpenGVLab/InternVL2-2B, downloaded on first use into "
                            f"{run_dir() / 'models' / 'InternVL2-2B'}")
    mainland = "from mainland China set HF_ENDPOINT=https://hf-mirror.com or MODEL_SOURCE=modelscope"
    assert mainland in format_report(report)
    for settings in ({"HF_ENDPOINT": "https://hf-mirror.com"}, {"MODEL_SOURCE": "modelscope"}):
        report = build_report(make_facts(environ={"MODEL_PATH": "download", **settings}))
        assert "mainland China" not in format_report(report)


def test_an_unknown_model_source_is_a_problem():
    report = build_report(make_facts(environ={"MODEL_SOURCE": "github"}))
    assert report.problems == ["MODEL_SOURCE='github' is not a model source: use huggingface or modelscope"]


@pytest.mark.parametrize(
    ("environ", "saved_login", "expected"),
    [
        ({"MODELSCOPE_API_TOKEN": "ms-secretvalue123"}, False, "found (env MODELSCOPE_API_TOKEN)"),
        ({}, True, "found (modelscope login)"),
        ({}, False, "not found"),
    ],
)
def test_the_modelscope_token_is_located_but_never_shown(tmp_path, environ, saved_login, expected):
    cookies = tmp_path / "credentials" / "cookies"
    if saved_login:
        cookies.parent.mkdir()
        cookies.write_bytes(b"pickled cookie jar holding ms-secretvalue123")
    report = build_report(make_facts(environ=environ, modelscope_token_file=cookies))
    assert report.modelscope_token == expected
    assert f"  ModelScope    token {expected}" in format_report(report)
    assert "ms-secretvalue123" not in format_report(report) + json.dumps(report.figures())


def test_gathered_facts_describe_this_python():
    import torch

    facts = gather_facts()
    assert facts.executable == sys.executable
    assert facts.packages["torch"] == torch.__version__
    assert facts.packages["transformers"] == metadata.version("transformers")
    assert len(facts.gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_the_doctor_command_prints_versions_and_what_runs_where():
    result = subprocess.run(
        [sys.executable, "-m", "course_utils", "doctor"], cwd=project_root(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for heading in ("Course environment", "What runs where", "torch", "lmdeploy", "xtuner", "HF token"):
        assert heading in result.stdout
    assert "serving       lmdeploy (GPU)" in result.stdout or "serving       transformers (" in result.stdout


@pytest.mark.notebook
def test_lesson_00_records_the_setup_of_the_kernel_it_ran_in(executed_notebook):
    import torch

    _, figures = executed_notebook("00")
    assert figures["torch_version"] == torch.__version__
    assert figures["cuda_available"] is torch.cuda.is_available()
    assert figures["gpu_count"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert Path(figures["python_executable"]) == Path(sys.executable)  # the course env's own kernel
    assert figures["transformers_version"] == metadata.version("transformers")
    assert figures["engine"] in ("lmdeploy (GPU)", "transformers (GPU)", "transformers (CPU)")
    assert (figures["engine"] == "transformers (CPU)") is not torch.cuda.is_available()


def model_folder(root: Path, config: dict | str | None, weights: bool = True) -> Path:
    folder = root / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("config", "weights", "phrase"),
    [
        (None, True, "has no config.json"),
        ("{broken", True, "config.json cannot be read"),
        ({"model_type": "llama"}, True, "not an InternVL2 model (config.json model_type 'llama'"),
        ({"model_type": "internvl_chat"}, False, "holds no weights"),
    ],
)
def test_a_model_path_that_is_not_an_internvl2_folder_is_named(tmp_path, config, weights, phrase):
    folder = model_folder(tmp_path, config, weights)
    report = build_report(make_facts(environ={"MODEL_PATH": str(folder)}))
    assert len(report.problems) == 1 and phrase in report.problems[0]
    with pytest.raises(CourseError, match=phrase.split(" (")[0]):
        check_requirements(report)


def test_an_internvl2_folder_a_hub_id_and_foodieqa_pass(tmp_path):
    folder = model_folder(tmp_path, {"model_type": "internvl_chat"})
    data = tmp_path / "FoodieQA"
    (data / "images").mkdir(parents=True)
    (data / "sivqa_tidy.json").write_text("[]")
    for environ in ({"MODEL_PATH": str(folder), "DATA_ROOT": str(tmp_path)}, {"MODEL_PATH": "OpenGVLab/InternVL2-2B"},
                    {"MODEL_PATH": "download"}, {"DATA_ROOT": "download"}):
        assert build_report(make_facts(environ=environ)).problems == []


@pytest.mark.parametrize(
    ("layout", "phrase"),
    [({"notes.txt": "x"}, "holds no sivqa_tidy.json"), ({"sivqa_tidy.json": "[]"}, "no images/ folder"),
     ({"FoodieQA.zip": "not a zip"}, "is a file but not a zip")],
)
def test_a_data_root_that_is_not_foodieqa_is_named(tmp_path, layout, phrase):
    for name, text in layout.items():
        (tmp_path / name).write_text(text)
    value = tmp_path / "FoodieQA.zip" if "FoodieQA.zip" in layout else tmp_path
    report = build_report(make_facts(environ={"DATA_ROOT": str(value)}))
    assert len(report.problems) == 1 and phrase in report.problems[0]
    assert f"  - {report.problems[0]}" in format_report(report)
