"""Lesson 04: LoRA fine-tuning with XTuner, launched from the notebook.

* :mod:`.config` - the course's XTuner configs in ``configs/``, what a job's config plans (steps, lr schedule), and
  its model or dataset built as ``xtuner train`` builds them;
* :mod:`.launcher` - ``xtuner train`` in a subprocess: progress bar, live curve, peak memory, resume, real errors;
* :mod:`.finetune` - runs in ``RUN_DIR/finetune/<run name>`` with their manifest, and lesson 04's run on demand;
* :mod:`.xtuner_patches` - what XTuner needs on a CPU, without DeepSpeed or without torchrun, and the held-out
  loss (loaded by the configs);
* :mod:`.lora` - parameter counts of what LoRA trains and what stays frozen;
* :mod:`.curve` - the loss / learning-rate curve, live during training, with the held-out loss after it.
"""

from .config import (
    LESSON_CONFIG, TINY_CONFIG, build_from_config, config_for, config_path, configs_dir, load_config, planned_steps,
    scheduled_lrs,
)
from .curve import LiveCurve, plot_training_curve
from .finetune import (
    LESSON_RUN_NAME, ensure_finetuned_model, finetune, job_for, load_finetune_manifest, run_work_dir,
)
from .launcher import (
    TrainingFailed, TrainingJob, TrainingRefused, TrainingResult, checkpoints, newest_checkpoint, train,
    training_curve,
)
from .lora import parameter_budget

__all__ = [
    "LESSON_CONFIG", "LESSON_RUN_NAME", "LiveCurve", "TINY_CONFIG", "TrainingFailed", "TrainingJob", "TrainingRefused",
    "TrainingResult", "build_from_config", "checkpoints", "config_for", "config_path", "configs_dir", "ensure_finetuned_model", "finetune",
    "job_for", "load_config", "load_finetune_manifest", "newest_checkpoint", "parameter_budget", "planned_steps",
    "plot_training_curve", "run_work_dir", "scheduled_lrs", "train", "training_curve",
]
