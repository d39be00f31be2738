"""Turn an ``xtuner train`` checkpoint into an official-format InternVL2 model folder (XTuner's conversion, made safe).

A LoRA checkpoint (``iter_N.pth``) holds only what trained: the LoRA matrices and the projector ``mlp1`` (and the
ViT when it trains). XTuner's ``convert_to_official`` rebuilds the training-time model from the training config,
loads those weights, merges each LoRA update into its frozen weight (``W + (alpha / r) · B @ A``, peft's
``merge_and_unload``) and saves the plain model. :func:`convert_checkpoint` does the same, and also:

* merges in float32 and saves in the base model's dtype (``dtype="auto"``), or in the one asked for;
* reads a DeepSpeed ZeRO checkpoint (a folder ``iter_N.pth/``) as well as mmengine's file, both with the training
  config mmengine saved inside, and the folder's trained weights in float32 (XTuner's reader rounds them to
  float16);
* copies what a model folder needs besides weights from the base folder, byte for byte: its remote-code ``.py``
  files (OpenGVLab's or the course's: XTuner's script copies only the ``configuration_*.py`` files, so the result
  did not load), the tokenizer with its chat template (LMDeploy 0.10 reads the template from there),
  ``generation_config.json``, and ``config.json`` with ``torch_dtype`` set to the saved dtype and the image tiling
  the model was trained with, so that every engine shows it pictures as training did: the training dataset's
  ``min/max_dynamic_patch`` and ``use_thumbnail``, or the base model's own where the config leaves them to the
  model (``None``; written as ``null`` they broke every reader of ``config.json``);
* checks that every trained tensor of the checkpoint found its place in the model (a silent partial load would
  leave uninitialised LoRA matrices) and that the merged weights have exactly the base model's names;
* writes through :func:`course_utils.outputs.staged_output`: never into the base model's folder or over a folder it
  did not make, and an interrupted conversion leaves no folder that looks finished.
* records what it made the folder from in ``course-conversion.json``: the checkpoint, the base model, the dtype,
  how many LoRA layers of the LLM and of the ViT it merged, and the tiling written into ``config.json``.

The folder loads with ``AutoModel.from_pretrained(out, trust_remote_code=True)`` and with LMDeploy.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

CONVERTED_KIND = "converted-model"
CONVERSION_FILE = "course-conversion.json"
WEIGHTS_FILE = "model.safetensors"
# Files of the base folder that are not carried over: its weights (replaced), its config (rewritten), and the
# course's markers of how the base folder was made.
NOT_COPIED = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json", "course_build.json",
              ".course-output.json", CONVERSION_FILE}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
DTYPES = ("auto", "bfloat16", "float16", "float32")
IMAGE_SETTINGS = ("min_dynamic_patch", "max_dynamic_patch", "use_thumbnail")
# mmengine's meta sits in the first GPU's model states: mp_rank_00_model_states.pt (ZeRO 1 and 2), or
# zero_pp_rank_0_mp_rank_00_model_states.pt (ZeRO 3)
DEEPSPEED_MODEL_STATES = "*mp_rank_00_model_states.pt"


def read_checkpoint(checkpoint: str | Path) -> tuple[dict, str | None]:
    """(trained tensors, the training config's text or None) of an mmengine checkpoint file or DeepSpeed folder."""
    import torch

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: train first (lesson 04) or pass an iter_N.pth path")
    if checkpoint.is_dir():
        return read_deepspeed_checkpoint(checkpoint)
    # weights_only=False: mmengine checkpoints hold Python objects (message hub, history buffers); this file is
    # the learner's own training output
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(content, dict) or "state_dict" not in content:
        raise ValueError(f"{checkpoint} is not an mmengine checkpoint (no 'state_dict'): pass the iter_N.pth that "
                         "xtuner train wrote")
    return content["state_dict"], content.get("meta", {}).get("cfg")


def read_deepspeed_checkpoint(checkpoint: Path) -> tuple[dict, str | None]:
    """(trained tensors in float32, the training config's text or None) of a DeepSpeed ZeRO folder.

    The trained weights are float32 copies spread over the optimizer-state shards of every GPU; DeepSpeed's own
    reader gathers them (XTuner's ``guess_load_checkpoint`` returns them in float16). mmengine keeps its ``meta``,
    the config the run trained with included, in the model-states file of the first GPU.
    """
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    model_states = sorted(checkpoint.glob(DEEPSPEED_MODEL_STATES))
    if not model_states:
        raise ValueError(f"{checkpoint} is a folder without DeepSpeed's model states ({DEEPSPEED_MODEL_STATES}): "
                         "pass the iter_N.pth that xtuner train wrote")
    # mmap: only mmengine's meta is read here, not the weights the file also holds; weights_only=False as above
    states = torch.load(model_states[0], map_location="cpu", weights_only=False, mmap=True)
    weights = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    return weights, states.get("meta", {}).get("cfg")


def training_config(config: str | Path | None, config_text: str | None):
    """The XTuner config the checkpoint was trained with: ``config`` if given, else the copy inside the checkpoint."""
    from mmengine.config import Config

    if config is not None:
        return Config.fromfile(str(config))
    if not config_text:
        raise ValueError("the checkpoint carries no training config: pass config= the XTuner config it was trained "
                         "with (xtuner train keeps a copy of it, filled in, in the run's work dir)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "training_config.py"
        path.write_text(config_text, encoding="utf-8")
        return Config.fromfile(str(path))


def build_training_model(cfg, base_model: str | Path | None = None):
    """XTuner's training-time model from the config's ``model`` entry (LoRA wrappers in place, no quantization)."""
    import logging

    from mmengine.logging import MMLogger
    from xtuner.model.utils import LoadWoInit
    from xtuner.registry import BUILDER

    model_cfg = cfg.model.copy()
    model_cfg.update(pretrained_pth=None, quantization_vit=False, quantization_llm=False)
    if base_model is not None:
        model_cfg.model_path = str(base_model)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # XTuner logs the whole model's structure while building it
    try:
        with LoadWoInit():  # every weight comes from the base folder or the checkpoint: skip random initialisation
            return BUILDER.build(model_cfg)
    finally:
        logger.setLevel(level)


def load_trained_weights(xtuner_model, state_dict: dict) -> None:
    """Load the checkpoint into the training-time model; ValueError if any trained tensor is missing or extra."""
    trained = set(xtuner_model.state_dict())  # XTuner's state_dict: exactly what trains (LoRA, mlp1, ...)
    missing = sorted(trained - set(state_dict))
    unexpected = sorted(set(state_dict) - trained)
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint does not match the training config: {len(missing)} trained tensors missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); pass the config and base "
            "model the checkpoint was trained with"
        )
    xtuner_model.load_state_dict(state_dict, strict=False)  # strict=False: the frozen weights come from the base


def lora_layers(module) -> int:
    """How many layers of ``module`` carry a LoRA adapter (peft's ``LoraLayer``)."""
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(layer, LoraLayer) for layer in module.modules())


def merge_lora(xtuner_model):
    """The plain ``InternVLChatModel`` in float32 with every LoRA update merged into its weight."""
    import torch

    chat_model = xtuner_model.model.to(torch.float32)  # merge in float32: no rounding before the final cast
    if xtuner_model.use_visual_encoder_lora:
        chat_model.vision_model = chat_model.vision_model.merge_and_unload()
    if xtuner_model.use_llm_lora:
        chat_model.language_model = chat_model.language_model.merge_and_unload()
    return chat_model.eval()


def base_weight_names(base_model: Path) -> set[str] | None:
    """Tensor names of the base folder's safetensors weights (None when it keeps them in another format)."""
    from safetensors import safe_open

    index = base_model / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    files = sorted(base_model.glob("*.safetensors"))
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            names.update(weights.keys())
    return names


def training_image_settings(cfg, base_config: dict) -> dict:
    """The tiling training used (``min/max_dynamic_patch``, ``use_thumbnail``): the training dataset's values, and
    the base model's own where the dataset leaves them to the model (absent or ``None``, as XTuner then reads them)."""
    dataset = cfg.get("train_dataset") or cfg.get("train_dataloader", {}).get("dataset", {})
    settings = {key: base_config[key] for key in IMAGE_SETTINGS if key in base_config}
    settings.update({key: dataset[key] for key in IMAGE_SETTINGS if dataset.get(key) is not None})
    return settings


def copy_model_files(base_model: Path, out: Path, dtype_name: str, image_settings: dict) -> list[str]:
    """Copy the base folder's non-weight files into ``out``; write its ``config.json`` with ``dtype_name`` and the
    tiling training used (``image_settings``)."""
    copied = []
    for path in sorted(base_model.iterdir()):
        if path.is_file() and path.name not in NOT_COPIED and not path.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, out / path.name)
            copied.append(path.name)
    config = json.loads((base_model / "config.json").read_text(encoding="utf-8"))
    for section in (config, config.get("llm_config", {}), config.get("vision_config", {})):
        if "torch_dtype" in section:
            section["torch_dtype"] = dtype_name
    config["torch_dtype"] = dtype_name
    config.update(image_settings)
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tokenizer_config = out / "tokenizer_config.json"
    if not tokenizer_config.is_file() or "chat_template" not in json.loads(tokenizer_config.read_text("utf-8")):
        raise ValueError(f"{base_model} has no chat_template in tokenizer_config.json; LMDeploy needs one: use an "
                         "InternVL2 folder that carries it (the official ones do)")
    return copied


def save_weights(chat_model, out: Path, dtype_name: str, expected_names: set[str] | None) -> None:
    """The merged weights as one ``model.safetensors`` in ``dtype_name``, checked against the base's names."""
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    tensors = {name: (value.to(dtype) if value.is_floating_point() else value).contiguous()
               for name, value in chat_model.state_dict().items()}
    if expected_names is not None and set(tensors) != expected_names:
        extra, lost = sorted(set(tensors) - expected_names), sorted(expected_names - set(tensors))
        raise ValueError(f"merged weights do not match the base model's names: extra {extra[:3]}, missing {lost[:3]}")
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})


def convert_checkpoint(checkpoint: str | Path, out: str | Path, config: str | Path | None = None,
                       base_model: str | Path | None = None, dtype: str = "auto", force: bool = False) -> Path:
    """Merge the LoRA checkpoint into an official-format InternVL2 folder at ``out`` (see the module docstring).

    ``config``: the XTuner config it was trained with (default: the copy mmengine keeps in the checkpoint);
    ``base_model``: the base folder (default: the config's ``model_path``); ``dtype``: ``auto`` keeps the base
    model's dtype. Returns the finished folder.
    """
    from ..outputs import check_output, staged_output

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    start = time.perf_counter()
    checkpoint = Path(checkpoint).expanduser().resolve()
    state_dict, config_text = read_checkpoint(checkpoint)
    cfg = training_config(config, config_text)
    base = Path(base_model or cfg.model.model_path).expanduser().resolve()
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base model folder {base} has no config.json: pass base_model= the InternVL2 "
                                "folder the checkpoint was trained from")
    protected = [base, checkpoint]
    check_output(out, CONVERTED_KIND, force=force, protected=protected)  # refuse before the slow part
    base_config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    if dtype == "auto":
        dtype = base_config.get("torch_dtype") or "bfloat16"
    xtuner_model = build_training_model(cfg, base)
    load_trained_weights(xtuner_model, state_dict)
    merged_lora = {"llm": lora_layers(xtuner_model.model.language_model),
                   "vision": lora_layers(xtuner_model.model.vision_model)}
    chat_model = merge_lora(xtuner_model)
    with staged_output(out, kind=CONVERTED_KIND, force=force, protected=protected) as staging:
        image_settings = training_image_settings(cfg, base_config)
        copied = copy_model_files(base, staging, dtype, image_settings)
        save_weights(chat_model, staging, dtype, base_weight_names(base))
        record = {
            "checkpoint": str(checkpoint), **checkpoint_signature(checkpoint), "base_model": str(base),
            "dtype": dtype, "merged_lora": merged_lora, "trained_tensors": len(state_dict),
            "image_settings": image_settings, "copied_files": copied, "seconds": round(time.perf_counter() - start, 1),
        }
        (staging / CONVERSION_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return Path(out).expanduser().resolve()


def read_conversion(out: str | Path) -> dict | None:
    """What a converted folder was made from (its ``course-conversion.json``), or None if it is not one."""
    path = Path(out) / CONVERSION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def checkpoint_signature(checkpoint: Path) -> dict:
    """Size and time of a checkpoint file, or of the files of a DeepSpeed folder (their sum and the newest)."""
    files = [path for path in checkpoint.iterdir() if path.is_file()] if checkpoint.is_dir() else [checkpoint]
    stats = [path.stat() for path in files]
    return {"checkpoint_bytes": sum(stat.st_size for stat in stats),
            "checkpoint_mtime": max((stat.st_mtime for stat in stats), default=None)}


def is_conversion_of(out: str | Path, checkpoint: str | Path) -> bool:
    """Whether ``out`` already holds the conversion of this very checkpoint (same path, size and time)."""
    record = read_conversion(out)
    checkpoint = Path(checkpoint).expanduser().resolve()
    return (record is not None and checkpoint.exists() and record["checkpoint"] == str(checkpoint)
            and {key: record.get(key) for key in ("checkpoint_bytes", "checkpoint_mtime")}
            == checkpoint_signature(checkpoint))
