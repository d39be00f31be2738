"""``python -m course_utils doctor``: what this machine has, and what will run where.

The report is built in two steps so that its logic can be tested without a GPU: :func:`gather_facts` observes
the machine (versions, CUDA, environment variables, where tokens are kept), :func:`build_report` turns those facts
into decisions (which engine serves the model, where fine-tuning runs, where downloads come from), and
:func:`format_report` prints them. A token is only ever said to be found or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from . import hub
from .errors import CourseError
from .model_download import DEFAULT_MODEL_REPO, finished_download
from .paths import DOWNLOAD_KEYWORD, downloaded_model_dir, is_hub_id, run_dir, synthetic_data_dir, tiny_model_dir

PACKAGES = ("torch", "torchvision", "transformers", "lmdeploy", "xtuner", "peft", "deepspeed", "jupyterlab", "papermill")
NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as torch sees it."""

    name: str
    memory_gib: float


@dataclass(frozen=True)
class Facts:
    """What the doctor observed; tests build these by hand to check every decision."""

    python: str
    executable: str
    packages: Mapping[str, str | None]  # distribution name -> version, None when not installed
    torch_cuda_build: str | None  # torch.version.cuda: the CUDA the torch wheel was built for
    gpus: tuple[Gpu, ...]
    environ: Mapping[str, str]
    hf_token_file: Path | None  # where `huggingface-cli login` stores the token
    modelscope_token_file: Path | None = None  # where `modelscope login` stores it


@dataclass(frozen=True)
class Report:
    """The doctor's answer: versions, hardware, and the decisions the lessons will follow."""

    python: str
    executable: str
    versions: dict[str, str]
    torch_cuda_build: str | None
    gpus: tuple[Gpu, ...]
    engine: str
    engine_reason: str
    training: str
    model: str
    data: str
    run_dir: str
    downloads: str
    hf_token: str
    modelscope_token: str
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what is wrong with MODEL_PATH / DATA_ROOT

    @property
    def cuda_available(self) -> bool:
        return bool(self.gpus)

    def figures(self) -> dict[str, Any]:
        """The key figures lesson 00 records (JSON-serialisable)."""
        return {
            "python_version": self.python,
            "python_executable": self.executable,
            "torch_version": self.versions["torch"],
            "transformers_version": self.versions["transformers"],
            "lmdeploy_version": self.versions["lmdeploy"],
            "xtuner_version": self.versions["xtuner"],
            "cuda_available": self.cuda_available,
            "gpu_count": len(self.gpus),
            "gpu_names": [gpu.name for gpu in self.gpus],
            "engine": self.engine,
        }


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None (read from metadata: nothing is imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def torch_facts() -> tuple[str | None, str | None, tuple[Gpu, ...]]:
    """torch's own version (with its build tag, e.g. ``2.8.0+cu128``), its CUDA build and the visible GPUs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pynvml on import; nothing a learner can act on
            import torch
    except ImportError:
        return None, None, ()
    gpus = ()
    if torch.cuda.is_available():
        gpus = tuple(
            Gpu(props.name, round(props.total_memory / 2**30, 1))
            for props in map(torch.cuda.get_device_properties, range(torch.cuda.device_count()))
        )
    return torch.__version__, torch.version.cuda, gpus


def gather_facts() -> Facts:
    """Observe this machine and this Python."""
    torch_version, torch_cuda_build, gpus = torch_facts()
    return Facts(
        python=platform.python_version(),
        executable=sys.executable,
        packages={name: torch_version if name == "torch" else package_version(name) for name in PACKAGES},
        torch_cuda_build=torch_cuda_build,
        gpus=gpus,
        environ=dict(os.environ),
        hf_token_file=hub.hf_token_file(),
        modelscope_token_file=hub.modelscope_token_file(),
    )


def choose_engine(facts: Facts) -> tuple[str, str]:
    """The engine ``backend="auto"`` serves the lessons' models with, labelled with its device, and why."""
    from .engines import choose_backend

    backend, reason = choose_backend(cuda=bool(facts.gpus), lmdeploy_installed=bool(facts.packages.get("lmdeploy")))
    return f"{backend} ({'GPU' if facts.gpus else 'CPU'})", reason


def choose_training(facts: Facts) -> str:
    """Where XTuner fine-tuning runs."""
    if not facts.packages.get("xtuner"):
        return NOT_INSTALLED
    if facts.gpus:
        zero = ", DeepSpeed ZeRO available" if facts.packages.get("deepspeed") else ""
        return f"XTuner on {len(facts.gpus)} GPU(s){zero}"
    return "XTuner on CPU (the tiny model only)"


def model_path_problem(value: str) -> str | None:
    """What is wrong with ``MODEL_PATH=value``, or None when it looks like an InternVL2 model folder, a model id
    or ``download``."""
    path = Path(value).expanduser()
    if not path.exists():
        if value == DOWNLOAD_KEYWORD or is_hub_id(value):
            return None  # downloaded on first use
        return (f"MODEL_PATH={value} does not exist: point it at a downloaded InternVL2 folder (e.g. InternVL2-2B), "
                "a model id or 'download', or unset it for the embedded tiny model")
    config_file = path / "config.json"
    if not config_file.is_file():
        return f"MODEL_PATH={value} has no config.json: point it at the folder that holds InternVL2's config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"MODEL_PATH={value}: config.json cannot be read ({error}); download the model again"
    if not isinstance(config, dict) or config.get("model_type") != "internvl_chat":
        found = config.get("model_type") if isinstance(config, dict) else None
        return f"MODEL_PATH={value} is not an InternVL2 model (config.json model_type {found!r}, not 'internvl_chat')"
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        return f"MODEL_PATH={value} holds no weights (*.safetensors): the download is incomplete"
    return None


def data_root_problem(value: str) -> str | None:
    """What is wrong with ``DATA_ROOT=value``, or None when it looks like FoodieQA (a folder, its zip, 'download')."""
    import zipfile

    from .foodieqa.layout import IMAGES_DIR, SIVQA_FILE, find_foodieqa_root

    if value == DOWNLOAD_KEYWORD:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        return (f"DATA_ROOT={value} does not exist: point it at the unzipped FoodieQA folder or FoodieQA.zip, set "
                "it to 'download', or unset it for the synthetic FoodieQA")
    if path.is_file():
        return None if zipfile.is_zipfile(path) else f"DATA_ROOT={value} is a file but not a zip: give FoodieQA.zip"
    root = find_foodieqa_root(path)
    if root is None:
        return (f"DATA_ROOT={value} holds no {SIVQA_FILE} (nor a FoodieQA/ folder with one): "
                "is it the unzipped FoodieQA?")
    if not (root / IMAGES_DIR).is_dir():
        return f"DATA_ROOT={value} has {SIVQA_FILE} but no {IMAGES_DIR}/ folder: unzip the whole release"
    return None


def build_report(facts: Facts) -> Report:
    """Turn observed facts into the report, with notes that name the fix for anything missing."""
    environ = facts.environ
    model_path, data_root = env_path_in("MODEL_PATH", environ), env_path_in("DATA_ROOT", environ)
    versions = {name: facts.packages.get(name) or NOT_INSTALLED for name in PACKAGES}
    notes = []
    if facts.packages.get("torch") is None:
        notes.append("torch is not installed in this Python: run `make env`, then use the env's python (`make doctor`).")
    if not facts.gpus:
        notes.append("no GPU: notebooks use the transformers CPU engine and the embedded tiny model runs everywhere.")
    elif not facts.packages.get("lmdeploy"):
        notes.append("GPU found but lmdeploy is not installed: lessons fall back to transformers; `make env` installs it.")
    if model_path and not facts.gpus:
        notes.append("MODEL_PATH is set but there is no GPU: real InternVL2 weights are slow on a CPU.")
    engine, engine_reason = choose_engine(facts)
    downloads, source, source_problem = describe_downloads(environ)
    from_huggingface_co = [downloads_model(model_path) and source == "huggingface", data_root == DOWNLOAD_KEYWORD]
    if any(from_huggingface_co) and not environ.get("HF_ENDPOINT", "").strip():
        notes.append(f"downloads come from huggingface.co: from mainland China set HF_ENDPOINT={hub.HF_MIRROR_EXAMPLE} "
                     "or MODEL_SOURCE=modelscope (README: Downloads from mainland China).")
    problems = [problem for problem in (model_path and model_path_problem(model_path),
                                        data_root and data_root_problem(data_root), source_problem) if problem]
    return Report(
        python=facts.python,
        executable=facts.executable,
        versions=versions,
        torch_cuda_build=facts.torch_cuda_build,
        gpus=facts.gpus,
        engine=engine,
        engine_reason=engine_reason,
        training=choose_training(facts),
        model=describe_model(model_path),
        data=f"DATA_ROOT={data_root}" if data_root else f"embedded synthetic FoodieQA ({synthetic_data_dir()})",
        run_dir=str(run_dir()),
        downloads=downloads,
        hf_token=hub.describe_token("huggingface", environ, facts.hf_token_file),
        modelscope_token=hub.describe_token("modelscope", environ, facts.modelscope_token_file),
        notes=notes,
        problems=problems,
    )


def downloads_model(model_path: str | None) -> bool:
    """Whether ``MODEL_PATH=model_path`` is downloaded rather than read from a folder."""
    return bool(model_path) and (model_path == DOWNLOAD_KEYWORD or is_hub_id(model_path)) \
        and not Path(model_path).expanduser().exists()


def describe_model(model_path: str | None) -> str:
    """The model the lessons use; for a download, which one and where it goes."""
    if not model_path:
        return f"embedded tiny InternVL2 ({tiny_model_dir()})"
    if not downloads_model(model_path):
        return f"MODEL_PATH={model_path}"
    repo_id = DEFAULT_MODEL_REPO if model_path == DOWNLOAD_KEYWORD else model_path
    folder = downloaded_model_dir(repo_id)
    state = "downloaded" if finished_download(folder, repo_id) else "downloaded on first use"
    return f"MODEL_PATH={model_path}: {repo_id}, {state} into {folder}"


def describe_downloads(environ: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """Where the model and FoodieQA would be downloaded from, the model's source, and what is wrong with
    ``MODEL_SOURCE`` if anything."""
    via_variable = " (HF_ENDPOINT)" if environ.get("HF_ENDPOINT", "").strip() else ""
    hf = f"{hub.hf_endpoint(environ)}{via_variable}"
    try:
        source = hub.model_source(environ=environ)
    except ValueError as error:
        return f"model from ?; FoodieQA from {hf}", None, str(error)
    if source == "modelscope":
        model = f"ModelScope, {hub.modelscope_endpoint(environ)} (MODEL_SOURCE=modelscope)"
    else:
        model = f"Hugging Face, {hf}"
    return f"model from {model}; FoodieQA from {hf}", source, None


def env_path_in(name: str, environ: Mapping[str, str]) -> str | None:
    """:func:`course_utils.paths.env_path`'s rule (unset or blank is None) applied to the observed environment."""
    return (environ.get(name) or "").strip() or None


def format_report(report: Report) -> str:
    """The report as the learner reads it."""
    cuda_build = f" (built for CUDA {report.torch_cuda_build})" if report.torch_cuda_build else ""
    gpus = ", ".join(f"{gpu.name} ({gpu.memory_gib:g} GiB)" for gpu in report.gpus) or "none"
    lines = [
        "Course environment",
        f"  python        {report.python}  ({report.executable})",
        f"  torch         {report.versions['torch']}{cuda_build}",
        *(f"  {name:<13} {report.versions[name]}" for name in PACKAGES if name != "torch"),
        f"  GPU           {gpus}",
        "",
        "What runs where",
        f"  serving       {report.engine}: {report.engine_reason}",
        f"  fine-tuning   {report.training}",
        f"  model         {report.model}",
        f"  data          {report.data}",
        f"  outputs       RUN_DIR={report.run_dir}",
        f"  downloads     {report.downloads}",
        f"  HF token      {report.hf_token}",
        f"  ModelScope    token {report.modelscope_token}",
    ]
    if report.notes:
        lines += ["", "Notes", *(f"  - {note}" for note in report.notes)]
    if report.problems:
        lines += ["", "Problems", *(f"  - {problem}" for problem in report.problems)]
    return "\n".join(lines)


def check_requirements(report: Report, require_gpu: bool = False) -> None:
    """Stop with a clear message when a lesson needs what this kernel lacks (torch; a GPU when asked for), or when
    MODEL_PATH / DATA_ROOT point at something that is not an InternVL2 model / FoodieQA."""
    if report.problems:
        raise CourseError("; ".join(report.problems))
    if report.versions["torch"] == NOT_INSTALLED:
        raise CourseError(
            f"torch is not installed for this kernel's python ({report.executable}). Run `make env` and start the "
            "lessons with `make lab`, which uses the course environment."
        )
    if require_gpu and not report.cuda_available:
        raise CourseError(
            "require_gpu=True but torch sees no GPU. Check `nvidia-smi`, and that this kernel is the course env's "
            f"python ({report.executable}); or set require_gpu=False to use the CPU engine."
        )


def doctor_report() -> Report:
    """The report for this machine."""
    return build_report(gather_facts())


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="show versions, GPU, and what will run where")
    parser.set_defaults(handler=_doctor_cli)


def _doctor_cli(args: argparse.Namespace) -> int:
    report = doctor_report()
    print(format_report(report))
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if report.problems else 0
