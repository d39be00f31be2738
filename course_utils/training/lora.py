"""What LoRA trains and what it leaves frozen, counted on a real InternVL2 model (or its layout on ``meta``).

LoRA replaces the update of a frozen weight ``W`` (out x in) by ``B @ A`` with ``A`` (r x in) and ``B`` (out x r):
``r * (in + out)`` trained numbers per adapted linear layer instead of ``in * out``. XTuner adapts every linear
layer of the LLM whose name it finds with ``find_all_linear_names`` (``target_modules=None`` in the config).
"""

from __future__ import annotations

from torch import nn


def lora_targets(language_model: nn.Module) -> set[str]:
    """The module names XTuner puts LoRA on when the config says ``target_modules=None``."""
    from xtuner.model.utils import find_all_linear_names

    return set(find_all_linear_names(language_model))


def lora_parameter_count(language_model: nn.Module, r: int, targets: set[str]) -> int:
    """Trained numbers of LoRA adapters of rank ``r`` on the linear layers named in ``targets`` (as peft matches)."""
    return sum(r * (module.in_features + module.out_features) for name, module in language_model.named_modules()
               if isinstance(module, nn.Linear) and name.split(".")[-1] in targets)


def parameter_budget(model: nn.Module, r: int = 128) -> dict[str, int]:
    """Numbers in each part of an InternVL2 model under the lesson's recipe (ViT and LLM frozen, LoRA, mlp1)."""
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    lora = lora_parameter_count(model.language_model, r, lora_targets(model.language_model))
    return {
        "vision encoder (frozen)": count(model.vision_model),
        "language model (frozen)": count(model.language_model),
        "projector mlp1 (trained)": count(model.mlp1),
        f"LoRA adapters r={r} (trained)": lora,
    }
