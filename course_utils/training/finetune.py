"""A fine-tuning run in the run directory: lesson 03's prepared data in, checkpoints and a manifest out.

``RUN_DIR/finetune/<run name>/`` is XTuner's work dir (checkpoints ``iter_N.pth``, ``last_checkpoint``, one
timestamped folder of logs per launch) and holds ``course-finetune.json``, the manifest lessons 05 and 06 read:
the config, the base model, the prepared data and its manifest, the newest checkpoint, steps, losses, peak
memory and the image tiling the model was trained with (evaluate with the same).

:func:`ensure_finetuned_model` is what lessons 05 and 06 evaluate when they run alone: lesson 04's run, trained
with lesson 04's recipe on lesson 03's data when there is none yet.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..foodieqa.convert import load_manifest
from ..foodieqa.defaults import ensure_prepared_foodieqa
from ..outputs import staged_file
from ..paths import finetune_dir, prepared_dir
from ..tiny_model import resolve_model_path
from .config import config_for, config_path, load_config, planned_steps
from .launcher import MANIFEST_FILE, TrainingJob, TrainingResult, train

LESSON_RUN_NAME = "lesson04"  # lesson 04's own run (its RUN_NAME parameter)


def run_work_dir(run_name: str) -> Path:
    if not run_name or Path(run_name).name != run_name:
        raise ValueError(f"a run name is one folder name, got {run_name!r}")
    return finetune_dir() / run_name


def load_finetune_manifest(run_name: str = LESSON_RUN_NAME, work_dir: str | Path | None = None) -> dict:
    """A run's ``course-finetune.json``; FileNotFoundError naming the lesson that makes it."""
    path = Path(work_dir or run_work_dir(run_name)) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fine-tuning run at {path.parent}: run lesson 04, or call "
                                "course_utils.training.ensure_finetuned_model()")
    return json.loads(path.read_text(encoding="utf-8"))


def job_for(prepared_dir: str | Path, model_path: str | Path | None = None, run_name: str = LESSON_RUN_NAME,
            config: str | Path | None = None, **options) -> TrainingJob:
    """A :class:`TrainingJob` training ``model_path`` on lesson 03's prepared data in ``prepared_dir``; ``config``
    None picks the lesson's recipe sized for the model (:func:`config_for`)."""
    data = load_manifest(prepared_dir)
    model_path = resolve_model_path(model_path)
    return TrainingJob(
        config=config_path(str(config or config_for(model_path))), model_path=model_path,
        train_json=Path(data["train_path"]), image_folder=Path(data["image_folder"]),
        validation_json=Path(data["test_path"]), work_dir=run_work_dir(run_name), **options,
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


def ensure_finetuned_model(run_name: str = LESSON_RUN_NAME, progress: bool = True, **job_options) -> dict:
    """The manifest of a finished fine-tuning run; trains lesson 04's recipe into ``run_name`` if it is missing
    (on lesson 03's prepared data, converted first when missing), resuming an interrupted run."""
    try:
        manifest = load_finetune_manifest(run_name)
        if manifest["complete"] and Path(manifest["checkpoint"]).exists():
            return manifest
    except FileNotFoundError:
        pass
    ensure_prepared_foodieqa()
    job = job_for(prepared_dir(), None, run_name, **job_options)
    print(f"fine-tuning {job.model_path} with lesson 04's recipe ({job.config.name}) into {job.work_dir}")
    return finetune(job, prepared_dir(), resume=True, progress=progress)
