"""A fine-tuning run in the run directory: lesson 03's prepared data in, checkpoints and a manifest out.

``RUN_DIR/finetune/<run name>/`` is XTuner's work dir (checkpoints ``iter_N.pth``, ``last_checkpoint``, one
timestamped folder of logs per launch) and holds ``course-finetune.json``, the manifest lessons 05 and 06 read:
the config, the base model, the prepared data and its manifest, the newest checkpoint, steps, losses, peak
memory and the image tiling the model was trained with (evaluate with the same).

:func:`ensure_smoke_model` is the embedded default's fine-tuned model: the tiny model trained through
``xtuner train`` on a larger synthetic FoodieQA, built once and reused.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..foodieqa.convert import load_manifest, prepare_foodieqa
from ..foodieqa.layout import SIVQA_FILE
from ..foodieqa.synthetic import make_synthetic_foodieqa
from ..outputs import staged_file
from ..paths import env_path, finetune_dir, run_dir
from ..tiny_model import ensure_tiny_model, resolve_model_path
from .config import SMOKE_CONFIG, config_path, load_config, planned_steps
from .launcher import MANIFEST_FILE, TrainingJob, TrainingResult, train

SMOKE_RUN_NAME = "smoke"
LESSON_RUN_NAME = "lesson04"  # lesson 04's own run (its RUN_NAME parameter)
# The smoke recipe's data: every one of the 144 synthetic dishes, 6 pictures each; 108 dishes (2,592 questions)
# train and 36 are held out. The 40-dish default is too small for a model with random weights to generalise.
SMOKE_DISHES = 144
SMOKE_IMAGES_PER_DISH = 6
SMOKE_STYLE = "original"  # text answers: a random 2-layer LLM does not learn to map options to letters quickly
SMOKE_SEED = 0


def run_work_dir(run_name: str) -> Path:
    if not run_name or Path(run_name).name != run_name:
        raise ValueError(f"a run name is one folder name, got {run_name!r}")
    return finetune_dir() / run_name


def default_run_name() -> str:
    """The fine-tuning run lessons 05 and 06 use by default: lesson 04's run of a learner's own model
    (``MODEL_PATH``), else the embedded default's smoke run (the tiny model does not learn in lesson 04's one epoch)."""
    return LESSON_RUN_NAME if env_path("MODEL_PATH") else SMOKE_RUN_NAME


def load_finetune_manifest(run_name: str = SMOKE_RUN_NAME, work_dir: str | Path | None = None) -> dict:
    """A run's ``course-finetune.json``; FileNotFoundError naming the lesson that makes it."""
    path = Path(work_dir or run_work_dir(run_name)) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fine-tuning run at {path.parent}: run lesson 04, or call "
                                "course_utils.training.ensure_smoke_model() for the embedded default")
    return json.loads(path.read_text(encoding="utf-8"))


def job_for(prepared_dir: str | Path, model_path: str | Path | None = None, run_name: str = SMOKE_RUN_NAME,
            config: str | Path = SMOKE_CONFIG, **options) -> TrainingJob:
    """A :class:`TrainingJob` training ``model_path`` on lesson 03's prepared data in ``prepared_dir``."""
    data = load_manifest(prepared_dir)
    return TrainingJob(
        config=config_path(str(config)), model_path=resolve_model_path(model_path),
        train_json=Path(data["train_path"]), image_folder=Path(data["image_folder"]),
        work_dir=run_work_dir(run_name), **options,
    )


def write_finetune_manifest(job: TrainingJob, result: TrainingResult, prepared_dir: str | Path,
                            planned: int) -> dict:
    """Write ``course-finetune.json`` into the run's work dir (atomically) and return it."""
    config = load_config(job)
    dataset = config.train_dataloader.dataset
    manifest = {
        "config": str(job.config),
        "base_model": str(job.model_path),
        "prepared_data": str(Path(prepared_dir).resolve()),
        "prepared_manifest": str(Path(prepared_dir).resolve() / "manifest.json"),
        "work_dir": str(result.work_dir),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "steps": result.steps,
        "planned_steps": planned,
        "complete": result.steps == planned,
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "peak_memory_mb": result.peak_memory_mb,
        "stopped_early": result.stopped_early,  # the last launch was stopped on purpose (see launcher.train)
        "resumed_from_step": result.resumed_from_step,
        "first_resumed_step": result.first_resumed_step,
        "seconds": result.seconds,
        "deepspeed": job.deepspeed,
        "nproc_per_node": job.nproc_per_node,
        "image_tiling": {"max_dynamic_patch": dataset.get("max_dynamic_patch"),
                         "use_thumbnail": dataset.get("use_thumbnail")},
        "trained": {"llm": "lora" if config.model.get("llm_lora") else
                    ("frozen" if config.model.get("freeze_llm") else "full"),
                    "vision": "frozen" if config.model.get("freeze_visual_encoder") else "full",
                    "projector": "full"},
    }
    with staged_file(result.work_dir / MANIFEST_FILE) as partial:
        partial.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def finetune(job: TrainingJob, prepared_dir: str | Path, resume: bool = False, fresh: bool = False,
             **train_options) -> dict:
    """Train ``job`` (see :func:`launcher.train`) and write its manifest; returns the manifest."""
    planned = planned_steps(job)
    result = train(job, resume=resume, fresh=fresh, total_steps=planned, **train_options)
    return write_finetune_manifest(job, result, prepared_dir, planned)


def smoke_data_dirs() -> tuple[Path, Path]:
    """(synthetic FoodieQA, its prepared data) of the smoke recipe, in the run directory."""
    name = f"synthetic-foodieqa-{SMOKE_DISHES}x{SMOKE_IMAGES_PER_DISH}"
    return run_dir() / "data" / name, run_dir() / "data" / f"{name}-xtuner-{SMOKE_STYLE}"


def ensure_smoke_data() -> Path:
    """The smoke recipe's prepared data (built and converted with lesson 03's code when missing)."""
    source, prepared = smoke_data_dirs()
    if not (source / SIVQA_FILE).is_file():
        print(f"drawing the smoke recipe's synthetic FoodieQA ({SMOKE_DISHES} dishes) into {source}")
        make_synthetic_foodieqa(source, dishes=SMOKE_DISHES, seed=SMOKE_SEED, images_per_dish=SMOKE_IMAGES_PER_DISH)
    try:
        load_manifest(prepared)
    except FileNotFoundError:
        prepare_foodieqa(source, prepared, style=SMOKE_STYLE, test_fraction=0.25, seed=SMOKE_SEED)
    return prepared


def ensure_smoke_model(run_name: str = SMOKE_RUN_NAME, progress: bool = True, **job_options) -> dict:
    """The smoke-trained tiny model's manifest; prepares the data and trains through ``xtuner train`` if needed.

    A finished run is reused; an interrupted one is resumed from its newest checkpoint.
    """
    try:
        manifest = load_finetune_manifest(run_name)
        if manifest["complete"] and Path(manifest["checkpoint"]).is_file():
            return manifest
    except FileNotFoundError:
        pass
    prepared = ensure_smoke_data()
    job = job_for(prepared, ensure_tiny_model(), run_name, SMOKE_CONFIG, **job_options)
    print(f"smoke-training the tiny model through xtuner train into {job.work_dir}")
    return finetune(job, prepared, resume=True, progress=progress)
