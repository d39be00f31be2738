"""Checks of lesson 04's exercises: which adapter learns first, what the loss counts, the best epoch, a broken
config."""

from __future__ import annotations

import inspect
from pathlib import Path

from . import exercise


def has_gradient(parameter) -> bool:
    return parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)


@exercise("04.1")
def learns_first(answer, layer) -> str | None:
    if layer.A.grad is None and layer.B.grad is None:
        return "run a backward pass first: compute a loss of layer(x) (say .pow(2).sum()) and call .backward() on it"
    truth = [name for name in ("A", "B") if has_gradient(getattr(layer, name))]
    if truth != ["B"]:
        return "start from a fresh LoRALinear (B still zero) and run a single backward pass"
    if answer == "B":
        return None
    return ("look at layer.A.grad and layer.B.grad: A's gradient passes through B, (alpha / r) · Bᵀ (dL/dy) xᵀ, and "
            "B is still zero; B's, (alpha / r) (dL/dy) (A x)ᵀ, needs only A, which is random")


@exercise("04.2")
def what_the_loss_counts(answer, batch) -> str | None:
    labelled = int((batch["labels"] != -100).sum())
    attended = int(batch["attention_mask"].sum())
    truth = labelled / attended
    if not isinstance(answer, (int, float)) or not 0 <= answer <= 1:
        return "answer with a share between 0 and 1: labelled positions / attended positions"
    if abs(answer - truth) < 1e-3:
        return None
    if abs(answer - labelled / batch["labels"].numel()) < 1e-3:
        return "count only the positions the model attends to (attention_mask is 1), not the padding"
    if abs(answer - (1 - truth)) < 1e-3:
        return "that is the share the loss ignores (-100): the loss counts the others"
    return "the loss counts the positions whose label is not -100; divide by the number where attention_mask is 1"


@exercise("04.3")
def best_epoch(answer, work_dir) -> str | None:
    from ..training import training_curve

    held_out = training_curve(work_dir, key="val_loss")
    if not held_out:
        return f"{work_dir} holds no held-out losses: run the lesson's training (sections 8 and 9) first"
    truth = min(held_out, key=lambda row: row["val_loss"])["step"]
    if answer == truth:
        return None
    trained = training_curve(work_dir)
    if trained and answer == min(trained, key=lambda row: row["loss"])["step"]:
        return "that is where the training loss was lowest: read the val_loss rows (key=\"val_loss\")"
    if answer == held_out[-1]["step"]:
        return "that is the last evaluation: is its val_loss the lowest one?"
    return "take the step of the row with the smallest val_loss in training_curve(work_dir, key=\"val_loss\")"


def unknown_model_keywords(config: str | Path) -> list[str]:
    """The keywords the config's model gets that its class does not take (any of them fails the build)."""
    from mmengine.config import Config
    from xtuner.model import InternVL_V1_5

    from ..training.config import mmengine_warnings_only
    from ..training.xtuner_patches import CourseInternVL

    with mmengine_warnings_only():
        model = Config.fromfile(str(config), import_custom_modules=False).model
    accepted = {name for cls in (CourseInternVL, InternVL_V1_5) for name in inspect.signature(cls).parameters}
    return sorted(key for key in model if key != "type" and key not in accepted)


@exercise("04.4")
def broken_config(answer, config) -> str | None:
    unknown = unknown_model_keywords(config)
    if not unknown:
        return f"{Path(config).name} builds as it is: misspell freeze_llm in it first (freeze_lm=True)"
    if isinstance(answer, str) and answer.strip("'\" ") in unknown:
        return None
    return ("build the model from the broken copy and read the TypeError: it names the keyword the model's class "
            "does not take ('... got an unexpected keyword argument ...')")
