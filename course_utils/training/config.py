"""The course's XTuner configs (``configs/``) and what a job's config says: batch size, epochs, planned schedule.

The configs are plain mmengine configs (string types, no imports) whose paths and a few run lengths come from
environment variables (``{{$COURSE_MODEL_PATH:...}}``); :func:`load_config` reads one with a job's values, the
way ``xtuner train`` will, without importing XTuner into the notebook.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..paths import project_root, temporary_environment

LESSON_CONFIG = "internvl2_2b_lora_foodieqa.py"
TINY_CONFIG = "internvl2_tiny_lora_foodieqa.py"  # the same recipe sized for the tiny base
TINY_MAX_HIDDEN = 512  # an LLM this narrow is the tiny base (or a model of its size): the tiny recipe's sizes fit it


def configs_dir() -> Path:
    return project_root() / "configs"


def config_path(name: str) -> Path:
    """A config of ``configs/`` by file name (or any existing path); FileNotFoundError naming the choices."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    path = configs_dir() / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in configs_dir().glob("*.py")))
        raise FileNotFoundError(f"no XTuner config {name!r}: give a path or one of {known}")
    return path


def config_for(model_path: str | Path) -> str:
    """The lesson's LoRA recipe sized for ``model_path``: the tiny config for a model of the tiny base's size (its
    copies included), the InternVL2-2B config for anything larger or unknown (a hub id)."""
    import json

    config_file = Path(model_path) / "config.json"
    if config_file.is_file():
        llm = json.loads(config_file.read_text(encoding="utf-8")).get("llm_config", {})
        if llm.get("hidden_size", TINY_MAX_HIDDEN + 1) <= TINY_MAX_HIDDEN:
            return TINY_CONFIG
    return LESSON_CONFIG


@contextlib.contextmanager
def mmengine_warnings_only():
    """mmengine's log shows only warnings meanwhile: it logs every variable it fills into a config, and XTuner
    the whole model it builds (the training log keeps those lines)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def load_config(job):
    """The job's config as mmengine reads it in the training process (the job's paths and run lengths filled in)."""
    from mmengine.config import Config

    course_values = {k: v for k, v in job.environment().items() if k.startswith("COURSE_")}
    with mmengine_warnings_only(), temporary_environment(course_values):
        return Config.fromfile(str(job.config), import_custom_modules=False)


def build_from_config(job, part: str, options: dict | None = None):
    """``part`` of the job's config built as ``xtuner train`` builds it: ``"model"`` (XTuner's InternVL with the
    config's LoRA adapters) or ``"dataset"`` (the training samples as XTuner tokenizes them).

    ``options`` overrides config values as ``xtuner train ... --cfg-options`` does, e.g.
    ``{"model.llm_lora.r": 4}``.
    """
    from xtuner.registry import BUILDER

    if part not in ("model", "dataset"):
        raise ValueError(f"part must be 'model' or 'dataset', got {part!r}")
    config = load_config(job)
    config.merge_from_dict(options or {})
    with mmengine_warnings_only():
        return BUILDER.build(config.model if part == "model" else config.train_dataloader.dataset)


def planned_steps(job) -> int:
    """How many optimizer steps the job trains: epochs x ceil(samples / (batch x processes))."""
    config = load_config(job)
    return job.iters_per_epoch(config.train_dataloader.batch_size) * int(config.train_cfg.max_epochs)


def build_schedulers(scheduler_configs, optimizer, epoch_length: int) -> list:
    """A config's ``param_scheduler`` entries built on ``optimizer`` as mmengine builds them for a run whose epochs
    are ``epoch_length`` steps (epoch-based entries converted to steps)."""
    from mmengine.registry import PARAM_SCHEDULERS

    schedulers = []
    for scheduler in scheduler_configs:
        scheduler = dict(scheduler)
        if scheduler.pop("convert_to_iter_based", False):
            cls = PARAM_SCHEDULERS.get(scheduler.pop("type"))
            schedulers.append(cls.build_iter_from_epoch(optimizer, epoch_length=epoch_length, **scheduler))
        else:
            schedulers.append(PARAM_SCHEDULERS.build(scheduler, default_args=dict(optimizer=optimizer)))
    return schedulers


def one_parameter_optimizer(optim_wrapper_config):
    """The config's optimizer over one parameter: enough to follow its learning-rate schedule without a model."""
    import torch
    from mmengine.optim import build_optim_wrapper

    optimizer_cfg = dict(optim_wrapper_config)
    optimizer_cfg["type"] = "OptimWrapper"  # DeepSpeed's wrapper needs a DeepSpeed engine; the lr is the same
    return build_optim_wrapper(torch.nn.Linear(1, 1), optimizer_cfg).optimizer


def scheduled_lrs(job) -> list[float]:
    """The learning rate of every step (1-based position i-1) under the job's schedulers, without training.

    Built with mmengine's own scheduler classes on a one-parameter optimizer, so a resumed run can be checked
    against the schedule an uninterrupted run follows.
    """
    config = load_config(job)
    epoch_length = job.iters_per_epoch(config.train_dataloader.batch_size)
    optimizer = one_parameter_optimizer(config.optim_wrapper)
    schedulers = build_schedulers(config.param_scheduler, optimizer, epoch_length)
    lrs = []
    for _ in range(epoch_length * int(config.train_cfg.max_epochs)):
        lrs.append(optimizer.param_groups[0]["lr"])
        for scheduler in schedulers:
            scheduler.step()
    return lrs
