"""Converting a checkpoint of lesson 04's LoRA recipe: the adapter model's logits, a sound folder, safe writes.

The base model is a learner's download as it looks: a copy of the tiny model's folder without the course's marker
files. The checkpoints are the recipe's own (``configs/internvl2_2b_lora_foodieqa.py``: frozen ViT and LLM, LoRA on
the LLM's linear layers, trained projector, the model's own tiling), made two ways:

* ``lora_run``: XTuner's training-time model built from the recipe, its trained tensors moved away from their
  initial values (LoRA's B is no longer zero) and saved as mmengine's checkpoint hook saves (``meta`` with the
  config, ``state_dict`` of what trains);
* ``zero2_run``: a real ``xtuner train`` of the recipe under DeepSpeed ZeRO-2 on the CPU, whose checkpoint
  is a folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from course_utils.outputs import MARKER_FILE, OutputRefused
from course_utils.tiny_model import BUILD_INFO_FILE
from course_utils.training import LESSON_CONFIG, job_for, load_config, train
from course_utils.training.convert import (
    CONVERSION_FILE, IMAGE_SETTINGS, convert_checkpoint, is_conversion_of, read_conversion,
)


@pytest.fixture(scope="module")
def learner_model(tiny_model_path, tmp_path_factory) -> Path:
    """An InternVL2 folder as a learner downloads it: the tiny model's files without the course's markers."""
    folder = tmp_path_factory.mktemp("models") / "InternVL2-tiny"
    shutil.copytree(tiny_model_path, folder, ignore=shutil.ignore_patterns(MARKER_FILE, BUILD_INFO_FILE))
    return folder


@pytest.fixture(scope="module")
def prepared(session_run_dir):
    """Lesson 03's prepared default data (40 synthetic dishes, 360 training questions)."""
    from course_utils.foodieqa import ensure_prepared_foodieqa
    from course_utils.paths import prepared_dir

    ensure_prepared_foodieqa()
    return prepared_dir()


@pytest.fixture(scope="module")
def lesson_config(prepared, learner_model):
    """The lesson's LoRA recipe as ``xtuner train`` reads it for the learner's model and lesson 03's data."""
    return load_config(job_for(prepared, learner_model, run_name="lesson-recipe", config=LESSON_CONFIG))


@pytest.fixture(scope="module")
def lora_run(lesson_config, tmp_path_factory):
    """(XTuner's training-time model of the recipe in float32, its checkpoint file) with every trained tensor moved."""
    from xtuner.registry import BUILDER

    model = BUILDER.build(lesson_config.model)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # LoRA's A and B, the projector
                parameter.add_(0.01 * torch.randn_like(parameter))
    checkpoint = tmp_path_factory.mktemp("work_dirs") / "iter_2.pth"
    torch.save({"meta": {"cfg": lesson_config.pretty_text, "iter": 2}, "state_dict": model.state_dict(),
                "message_hub": {}}, checkpoint)
    return model.float().eval(), checkpoint


@pytest.fixture(scope="module")
def converted(lora_run, tmp_path_factory):
    _, checkpoint = lora_run
    return convert_checkpoint(checkpoint, tmp_path_factory.mktemp("out") / "tiny-finetuned", dtype="float32")


@pytest.fixture(scope="module")
def training_batch(lesson_config):
    """Two questions of lesson 03's training data with their pictures, as XTuner's dataset and collate give them."""
    from xtuner.dataset.collate_fns import default_collate_fn
    from xtuner.registry import BUILDER

    dataset = BUILDER.build(lesson_config.train_dataloader.dataset)
    data = default_collate_fn([dataset[0], dataset[1]])["data"]
    pixel_values = torch.cat(list(data["pixel_values"]))  # (tiles of both pictures, 3, 224, 224), as XTuner does
    return dict(pixel_values=pixel_values, input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                position_ids=data["position_ids"], image_flags=torch.ones(len(pixel_values), dtype=torch.long))


def training_time_logits(xtuner_model, batch):
    """XTuner's own training forward (``InternVL_V1_5._llm_forward``: LoRA applied on the fly), in float32."""
    from xtuner.model import InternVL_V1_5

    with torch.no_grad():
        return InternVL_V1_5._llm_forward(xtuner_model, **batch).logits


def load_folder(model_path):
    """A model folder loaded as a learner loads it (AutoModel, remote code, float32)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_path, trust_remote_code=True, torch_dtype=torch.float32).eval()


def folder_logits(model_path, batch, img_context_token_id, dtype=torch.float32):
    model = load_folder(model_path).to(dtype)
    model.img_context_token_id = img_context_token_id  # chat() sets it from the tokenizer; forward() needs it
    with torch.no_grad():
        return model(**in_precision(batch, dtype)).logits


def in_precision(batch, dtype):
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in batch.items()}


def float64_logits(xtuner_model, batch):
    """The training-time logits computed in float64 (the model is put back to float32 after).

    The merge is compared in float64: the merged folder's float32 weights against the adapters applied on the fly,
    without the rounding of float32 matrix products, whose order differs between the two (2e-5 apart on the
    pretrained tiny base's logits of magnitude 7, in float32)."""
    xtuner_model.double()
    try:
        return training_time_logits(xtuner_model, in_precision(batch, torch.float64))
    finally:
        xtuner_model.float()


def max_difference(logits, expected, batch) -> float:
    """The largest absolute difference at the batch's real (not padded) positions."""
    mask = batch["attention_mask"]
    return (logits[mask] - expected[mask]).abs().max().item()


def test_the_merged_model_gives_the_adapter_models_logits(lora_run, converted, training_batch):
    xtuner_model, _ = lora_run
    image_token = xtuner_model.model.img_context_token_id
    trained = float64_logits(xtuner_model, training_batch)
    merged = folder_logits(converted, training_batch, image_token, dtype=torch.float64)
    assert max_difference(merged, trained, training_batch) <= 1e-5
    with xtuner_model.model.language_model.disable_adapter():  # the same model without its LoRA update
        unadapted = float64_logits(xtuner_model, training_batch)
    assert max_difference(unadapted, trained, training_batch) > 1e-2  # a conversion without the merge would fail
    adapted_layers = sum(name.endswith(".lora_A") for name, _ in xtuner_model.named_modules())
    assert adapted_layers > 0
    assert read_conversion(converted)["merged_lora"] == {"llm": adapted_layers, "vision": 0}


def test_config_json_keeps_the_base_models_tiling_where_the_recipe_leaves_it_to_the_model(
        lesson_config, converted, learner_model, prepared):
    from PIL import Image

    from course_utils.chat import image_pixel_values
    from course_utils.foodieqa import load_manifest

    assert all(lesson_config.train_dataset[key] is None for key in ("max_dynamic_patch", "use_thumbnail"))
    base_config = json.loads((learner_model / "config.json").read_text())
    config = json.loads((converted / "config.json").read_text())
    assert {key: config[key] for key in IMAGE_SETTINGS} == {key: base_config[key] for key in IMAGE_SETTINGS}
    assert (base_config["max_dynamic_patch"], base_config["use_thumbnail"]) == (1, True)  # concrete, not null
    assert read_conversion(converted)["image_settings"] == {key: base_config[key] for key in IMAGE_SETTINGS}
    # lesson 05 reads the tiling from config.json: the converted model sees a picture as the base model does
    data = load_manifest(prepared)
    picture = Image.open(Path(data["image_folder"]) / json.loads(Path(data["train_path"]).read_text())[0]["image"])
    picture = picture.resize((3 * picture.width, picture.height))  # a wide photo: as many tiles as the base allows
    tiles = image_pixel_values(load_folder(converted), picture)
    assert len(tiles) == base_config["max_dynamic_patch"]
    assert torch.equal(tiles, image_pixel_values(load_folder(learner_model), picture))


@pytest.fixture(scope="module")
def zero2_run(prepared, learner_model):
    """(job, checkpoint folder) of the recipe trained by ``xtuner train`` under DeepSpeed ZeRO-2 on one CPU process,
    stopped once the checkpoint of step 2 is saved (steps 1 and 2 are one optimizer step: LoRA's B has moved)."""
    job = job_for(prepared, learner_model, run_name="lesson-recipe-zero2", config=LESSON_CONFIG, max_epochs=1,
                  save_steps=2, deepspeed="deepspeed_zero2")
    return job, train(job, fresh=True, stop_after_step=2, progress=False).checkpoint


def test_a_zero2_checkpoint_folder_of_the_recipe_converts_without_its_config(zero2_run, learner_model,
                                                                             training_batch, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    job, checkpoint = zero2_run
    assert checkpoint.is_dir()
    converted = convert_checkpoint(checkpoint, tmp_path / "merged", dtype="float32")  # no config, no base model
    record = read_conversion(converted)
    assert record["base_model"] == str(learner_model) and record["merged_lora"]["llm"] > 0
    assert is_conversion_of(converted, checkpoint)  # lesson 05 run again reuses it
    config = json.loads((converted / "config.json").read_text())
    assert (config["max_dynamic_patch"], config["use_thumbnail"]) == (1, True)  # the base model's tiling
    # the training-time model: the config xtuner train dumped into the work dir, the checkpoint's float32 weights
    weights = get_fp32_state_dict_from_zero_checkpoint(str(job.work_dir), tag=checkpoint.name)
    assert all(weights[name].abs().max() > 0 for name in weights if "lora_B" in name)
    trained = BUILDER.build(Config.fromfile(str(job.work_dir / LESSON_CONFIG)).model)
    trained.load_state_dict(weights, strict=False)
    trained = trained.float().eval()
    merged = folder_logits(converted, training_batch, trained.model.img_context_token_id, dtype=torch.float64)
    assert max_difference(merged, float64_logits(trained, training_batch), training_batch) <= 1e-5


def test_a_checkpoint_folder_without_its_config_says_how_to_convert_it(zero2_run, tmp_path):
    job, checkpoint = zero2_run
    copy = shutil.copytree(checkpoint, tmp_path / checkpoint.name)
    states_file = copy / "mp_rank_00_model_states.pt"
    states = torch.load(states_file, map_location="cpu", weights_only=False)
    del states["meta"]  # where mmengine keeps the config
    torch.save(states, states_file)
    with pytest.raises(ValueError, match="carries no training config: pass config= the XTuner config it was trained"):
        convert_checkpoint(copy, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    converted = convert_checkpoint(copy, tmp_path / "merged", config=job.work_dir / LESSON_CONFIG)  # the named fix
    assert read_conversion(converted)["merged_lora"]["llm"] > 0


def test_converted_folder_is_complete_and_bfloat16_is_the_float32_merge_rounded(lora_run, converted, tmp_path):
    from safetensors.torch import load_file

    _, checkpoint = lora_run
    base = Path(json.loads((converted / CONVERSION_FILE).read_text())["base_model"])
    for name in ("modeling_internvl_chat.py", "modeling_internlm2.py", "modeling_intern_vit.py", "conversation.py",
                 "configuration_internvl_chat.py", "tokenizer.json", "generation_config.json"):
        assert (converted / name).read_bytes() == (base / name).read_bytes(), name
    assert "chat_template" in json.loads((converted / "tokenizer_config.json").read_text())
    assert json.loads((converted / "config.json").read_text())["torch_dtype"] == "float32"
    assert is_conversion_of(converted, checkpoint)

    default = convert_checkpoint(checkpoint, tmp_path / "bf16")  # dtype auto: the base's bf16
    assert json.loads((default / "config.json").read_text())["llm_config"]["torch_dtype"] == "bfloat16"
    rounded, exact = load_file(default / "model.safetensors"), load_file(converted / "model.safetensors")
    assert rounded.keys() == exact.keys() == load_file(base / "model.safetensors").keys()
    assert all(torch.equal(rounded[name], exact[name].to(torch.bfloat16)) for name in exact)


def test_refuses_the_base_folder_and_a_folder_it_did_not_make(lora_run, learner_model, tmp_path):
    _, checkpoint = lora_run
    before = sorted(p.name for p in learner_model.iterdir())
    with pytest.raises(OutputRefused, match="input"):
        convert_checkpoint(checkpoint, learner_model)
    with pytest.raises(OutputRefused, match="input"):
        convert_checkpoint(checkpoint, learner_model / "merged")
    assert sorted(p.name for p in learner_model.iterdir()) == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(OutputRefused, match="did not make"):
        convert_checkpoint(checkpoint, foreign)
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_an_interrupted_conversion_leaves_no_finished_looking_folder(lora_run, tmp_path, monkeypatch):
    import course_utils.training.convert as convert

    _, checkpoint = lora_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "save_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(checkpoint, tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a staging folder


def test_a_checkpoint_that_does_not_match_its_config_is_refused(lora_run, tmp_path):
    _, checkpoint = lora_run
    content = torch.load(checkpoint, weights_only=False)
    dropped = next(name for name in content["state_dict"] if "lora_B" in name)
    del content["state_dict"][dropped]
    broken = tmp_path / "iter_9.pth"
    torch.save(content, broken)
    with pytest.raises(ValueError, match="1 trained tensors missing"):
        convert_checkpoint(broken, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_lesson_04s_run_converts_to_its_training_time_logits(lesson04_run, training_batch, tmp_path):
    """The real thing: the checkpoint lesson 04's ``xtuner train`` wrote on the default (shared by the session)."""
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    checkpoint = lesson04_run["checkpoint"]
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config_path = tmp_path / "trained_with.py"
    config_path.write_text(content["meta"]["cfg"], encoding="utf-8")  # the config as mmengine ran it
    trained = BUILDER.build(Config.fromfile(str(config_path)).model)
    trained.load_state_dict(content["state_dict"], strict=False)
    trained = trained.float().eval()
    converted = convert_checkpoint(checkpoint, tmp_path / "lesson04-merged", dtype="float32")
    image_token = trained.model.img_context_token_id
    expected = float64_logits(trained, training_batch)  # in float64, as the merge test above explains
    merged = folder_logits(converted, training_batch, image_token, dtype=torch.float64)
    base = folder_logits(trained.model.config._name_or_path, training_batch, image_token, dtype=torch.float64)
    assert max_difference(merged, expected, training_batch) <= 1e-5
    assert max_difference(base, expected, training_batch) > 1e-2  # training moved the weights: the comparison can fail
    assert json.loads((converted / "config.json").read_text())["max_dynamic_patch"] == 1  # the tiny base's tiling
