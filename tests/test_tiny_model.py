"""Building model folders: deterministic, fast, rebuilt when stale, usable by XTuner."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from course_utils import tiny_model
from course_utils.tiny_model import build_model_dir, build_tokenizer, ensure_tiny_model, is_current_build


def folder_digest(path):
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        digest.update((path / name).read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_byte_identical_folders_and_another_seed_other_weights(tmp_path):
    first = build_model_dir(tmp_path / "a", seed=5)
    second = build_model_dir(tmp_path / "b", seed=5)
    third = build_model_dir(tmp_path / "c", seed=6)
    assert folder_digest(first) == folder_digest(second)
    assert (first / "model.safetensors").read_bytes() != (third / "model.safetensors").read_bytes()


def test_tokenizer_vocabulary_fits_the_model(tiny_model_path):
    config = json.loads((tiny_model_path / "config.json").read_text())
    assert config["llm_config"]["vocab_size"] == len(build_tokenizer())
    special = json.loads((tiny_model_path / "tokenizer_config.json").read_text())
    assert "{{ bos_token }}" in special["chat_template"]


def test_ensure_tiny_model_rebuilds_a_stale_or_broken_folder(session_run_dir, monkeypatch):
    model_dir, weights = ensure_tiny_model(), tiny_model.shipped_base_weights()
    assert is_current_build(model_dir, weights=weights) and not is_current_build(model_dir)  # not the random build
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model() == model_dir and (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setattr(tiny_model, "BUILDER_VERSION", tiny_model.BUILDER_VERSION + 1)  # as after a code change
    assert not is_current_build(model_dir, weights=weights)
    ensure_tiny_model()
    assert is_current_build(model_dir, weights=weights)


def test_fewer_layers_keep_the_widths_and_are_never_the_current_build(tmp_path):
    from course_utils.internvl import InternVLChatConfig

    full = InternVLChatConfig.from_pretrained(build_model_dir(tmp_path / "full"))
    short = InternVLChatConfig.from_pretrained(build_model_dir(tmp_path / "short", layers=1))
    assert short.llm_config.num_hidden_layers == short.vision_config.num_hidden_layers == 1
    assert full.llm_config.num_hidden_layers > 1 and full.vision_config.num_hidden_layers > 1
    assert short.llm_config.hidden_size == full.llm_config.hidden_size
    assert short.llm_config.vocab_size == full.llm_config.vocab_size
    assert is_current_build(tmp_path / "full") and not is_current_build(tmp_path / "short")


def test_cli_builds_a_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "course_utils", "make-tiny-model", str(tmp_path / "m"), "--seed", "2"],
                            capture_output=True, text=True, check=True)
    assert "built tiny InternVL2 model" in result.stdout
    assert json.loads((tmp_path / "m" / "course_build.json").read_text())["seed"] == 2


@pytest.fixture
def single_process_group(tmp_path):
    """XTuner's InternVL forward asks torch.distributed for its rank; a one-process gloo group answers."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def xtuner_batch(model) -> dict:
    """A batch as XTuner's collate makes it: two samples of two tiles each, answers labelled, the second sample padded
    on the right (padding is neither attended to nor labelled)."""
    image_tokens = [model.model.img_context_token_id] * model.model.num_image_token * 2
    ids = torch.tensor([[1, 5] + image_tokens + [9, 10, 11, 4], [1, 5] + image_tokens + [12, 4, 0, 0]])
    labels = ids.clone()
    labels[:, :-4] = -100
    labels[1, -2:] = -100
    attention_mask = torch.ones_like(ids, dtype=torch.bool)
    attention_mask[1, -2:] = False
    return dict(pixel_values=torch.randn(2, 2, 3, 224, 224), input_ids=ids, labels=labels,
                attention_mask=attention_mask, position_ids=torch.arange(ids.shape[1]).repeat(2, 1))


def test_xtuner_builds_lora_model_from_the_folder_and_trains_a_step(tiny_model_path, single_process_group):
    from peft import LoraConfig
    from xtuner.model import InternVL_V1_5

    model = InternVL_V1_5(
        str(tiny_model_path), freeze_llm=True, freeze_visual_encoder=True,
        llm_lora=dict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, target_modules=None, task_type="CAUSAL_LM"),
    )
    assert model.model.language_model.config.attn_implementation == "flash_attention_2"  # XTuner's request
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or ".mlp1." in name for name in trainable)
    assert not any("vision_model" in name for name in trainable)

    model.train()
    loss = model(xtuner_batch(model))["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for name, g in grads.items() if "lora_B" in name)
    assert any(g.abs().sum() > 0 for name, g in grads.items() if ".mlp1." in name)


def test_course_forward_gives_xtuners_loss_and_gradients(tiny_model_path, single_process_group):
    """CourseInternVL applies the output head only at labelled positions; XTuner's own forward scores every
    position. Same batch, same weights: the same loss and the same LoRA/projector gradients."""
    from peft import LoraConfig
    from xtuner.model import InternVL_V1_5

    from course_utils.training.xtuner_patches import CourseInternVL

    lora = dict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, target_modules=None, task_type="CAUSAL_LM")
    torch.manual_seed(0)
    course = CourseInternVL(str(tiny_model_path), freeze_llm=True, freeze_visual_encoder=True, llm_lora=lora)
    xtuner = InternVL_V1_5(str(tiny_model_path), freeze_llm=True, freeze_visual_encoder=True, llm_lora=lora)
    xtuner.float()  # CourseInternVL is float32 on a CPU
    with torch.no_grad():  # LoRA's B starts at zero: give both models the same non-zero adapters
        for (name, ours), (_, theirs) in zip(course.named_parameters(), xtuner.named_parameters()):
            if "lora_" in name:
                ours.normal_(std=0.05)
            theirs.copy_(ours)
    data = xtuner_batch(course)
    losses = []
    for model in (course, xtuner):
        model.train()
        loss = model(dict(data))["loss"]
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    theirs = dict(xtuner.named_parameters())
    compared = 0
    for name, parameter in course.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter.grad, theirs[name].grad, rtol=1e-4, atol=1e-6)
            compared += 1
    assert compared > 10  # every LoRA adapter and mlp1
