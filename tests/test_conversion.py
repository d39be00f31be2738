"""Converting an XTuner LoRA checkpoint: same logits as the training-time model, safe writes, a complete folder.

The checkpoint is made the way ``xtuner train`` makes one: XTuner's ``InternVL_V1_5`` on the tiny model with LLM
LoRA (frozen ViT and LLM, trained projector), its trained tensors moved away from their initial values, and saved
as mmengine's checkpoint hook does (``meta`` with the config text, ``state_dict`` of what trains).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from course_utils.outputs import OutputRefused
from course_utils.training.convert import CONVERSION_FILE, convert_checkpoint, is_conversion_of

CONFIG_TEMPLATE = """\
from peft import LoraConfig
from xtuner.model import InternVL_V1_5

model = dict(
    type=InternVL_V1_5, model_path={model_path!r}, freeze_llm=True, freeze_visual_encoder=True,
    llm_lora=dict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.05, target_modules=None, task_type="CAUSAL_LM"),
)
train_dataset = dict(max_dynamic_patch=1, use_thumbnail=False)  # the tiling training used (the tiny model's: 6 + 1)
"""


@pytest.fixture(scope="module")
def single_process_group(tmp_path_factory):
    """XTuner's InternVL forward asks torch.distributed for its rank; a one-process gloo group answers."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('pg') / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def lora_run(tiny_model_path, tmp_path_factory):
    """(trained XTuner model in float32, checkpoint path, config path) of a tiny LLM-LoRA run."""
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    folder = tmp_path_factory.mktemp("work_dirs")
    config_path = folder / "tiny_lora.py"
    config_path.write_text(CONFIG_TEMPLATE.format(model_path=str(tiny_model_path)), encoding="utf-8")
    cfg = Config.fromfile(str(config_path))
    model = BUILDER.build(cfg.model)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained run: LoRA B is no longer zero, the projector has moved
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    checkpoint = folder / "iter_2.pth"
    torch.save({"meta": {"cfg": cfg.pretty_text, "iter": 2}, "state_dict": model.state_dict(),
                "message_hub": {}}, checkpoint)
    return model.float().eval(), checkpoint, config_path


@pytest.fixture(scope="module")
def converted(lora_run, tmp_path_factory):
    _, checkpoint, _ = lora_run
    return convert_checkpoint(checkpoint, tmp_path_factory.mktemp("out") / "tiny-finetuned", dtype="float32")


def sample_batch(model):
    """Two prompts with two image tiles each, the second padded on the right (as XTuner pads)."""
    torch.manual_seed(2)
    image_tokens = [model.img_context_token_id] * model.num_image_token * 2
    input_ids = torch.tensor([[1, 5] + image_tokens + [9, 10, 11, 4], [1, 5] + image_tokens + [12, 4, 0, 0]])
    attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    attention_mask[1, -2:] = False
    return dict(pixel_values=torch.randn(4, 3, 224, 224), input_ids=input_ids, attention_mask=attention_mask,
                position_ids=torch.arange(input_ids.shape[1]).repeat(2, 1), image_flags=torch.ones(4, dtype=torch.long))


def forward_of(model_path, batch, img_context_token_id):
    """Logits of a model folder loaded as a learner loads it (AutoModel, remote code, float32)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path, trust_remote_code=True, torch_dtype=torch.float32).eval()
    model.img_context_token_id = img_context_token_id  # chat() sets it from the tokenizer; forward() needs it
    return model(**batch).logits


def test_converted_folder_gives_the_training_time_logits(lora_run, converted, single_process_group):
    xtuner_model, _, _ = lora_run
    batch = sample_batch(xtuner_model.model)
    with torch.no_grad():
        trained = xtuner_model._llm_forward(**batch).logits  # XTuner's own forward, LoRA applied on the fly
        merged, base = (forward_of(path, batch, xtuner_model.model.img_context_token_id)
                        for path in (converted, xtuner_model.model.config._name_or_path))
    mask = batch["attention_mask"]
    assert torch.allclose(merged[mask], trained[mask], atol=1e-5, rtol=1e-4), (merged - trained)[mask].abs().max()
    assert (base[mask] - trained[mask]).abs().max() > 1e-2  # the LoRA update changes the logits: the test can fail


def test_converted_folder_is_complete_and_bfloat16_is_the_float32_merge_rounded(lora_run, converted, tmp_path):
    from safetensors.torch import load_file

    _, checkpoint, config_path = lora_run
    base = Path(json.loads((converted / CONVERSION_FILE).read_text())["base_model"])
    for name in ("modeling_internvl_chat.py", "modeling_internlm2.py", "modeling_intern_vit.py", "conversation.py",
                 "configuration_internvl_chat.py", "tokenizer.json", "generation_config.json"):
        assert (converted / name).read_bytes() == (base / name).read_bytes(), name
    assert "chat_template" in json.loads((converted / "tokenizer_config.json").read_text())
    config = json.loads((converted / "config.json").read_text())
    assert config["torch_dtype"] == "float32"
    assert (config["max_dynamic_patch"], config["use_thumbnail"]) == (1, False)  # pictures as training saw them
    assert json.loads((base / "config.json").read_text())["max_dynamic_patch"] == 6
    assert is_conversion_of(converted, checkpoint)

    default = convert_checkpoint(checkpoint, tmp_path / "bf16", config=config_path)  # dtype auto: the base's bf16
    assert json.loads((default / "config.json").read_text())["llm_config"]["torch_dtype"] == "bfloat16"
    rounded, exact = load_file(default / "model.safetensors"), load_file(converted / "model.safetensors")
    assert rounded.keys() == exact.keys() == load_file(base / "model.safetensors").keys()
    assert all(torch.equal(rounded[name], exact[name].to(torch.bfloat16)) for name in exact)


def test_refuses_the_base_folder_and_a_folder_it_did_not_make(lora_run, tiny_model_path, tmp_path):
    _, checkpoint, _ = lora_run
    before = sorted(p.name for p in tiny_model_path.iterdir())
    with pytest.raises(OutputRefused, match="input"):
        convert_checkpoint(checkpoint, tiny_model_path)
    with pytest.raises(OutputRefused, match="input"):
        convert_checkpoint(checkpoint, tiny_model_path / "merged")
    assert sorted(p.name for p in tiny_model_path.iterdir()) == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(OutputRefused, match="did not make"):
        convert_checkpoint(checkpoint, foreign)
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_an_interrupted_conversion_leaves_no_finished_looking_folder(lora_run, tmp_path, monkeypatch):
    import course_utils.training.convert as convert

    _, checkpoint, _ = lora_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "save_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(checkpoint, tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a staging folder


def test_a_checkpoint_that_does_not_match_its_config_is_refused(lora_run, tmp_path):
    _, checkpoint, _ = lora_run
    content = torch.load(checkpoint, weights_only=False)
    dropped = next(name for name in content["state_dict"] if "lora_B" in name)
    del content["state_dict"][dropped]
    broken = tmp_path / "iter_9.pth"
    torch.save(content, broken)
    with pytest.raises(ValueError, match="1 trained tensors missing"):
        convert_checkpoint(broken, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_the_smoke_run_of_xtuner_train_converts_to_its_training_time_logits(smoke_model, tmp_path):
    """The real thing: the checkpoint ``xtuner train`` wrote for the embedded default (shared by the session)."""
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    checkpoint = smoke_model["checkpoint"]
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config_path = tmp_path / "trained_with.py"
    config_path.write_text(content["meta"]["cfg"], encoding="utf-8")  # the config as mmengine ran it
    trained = BUILDER.build(Config.fromfile(str(config_path)).model)
    trained.load_state_dict(content["state_dict"], strict=False)
    trained = trained.float().eval()
    converted = convert_checkpoint(checkpoint, tmp_path / "smoke-merged", dtype="float32")
    torch.manual_seed(3)
    image_tokens = [trained.model.img_context_token_id] * trained.model.num_image_token
    batch = dict(pixel_values=torch.randn(1, 3, 224, 224), input_ids=torch.tensor([[1, 5] + image_tokens + [9, 4]]),
                 image_flags=torch.ones(1, dtype=torch.long))
    with torch.no_grad():
        expected = trained.model(**batch).logits
        merged = forward_of(converted, batch, trained.model.img_context_token_id)
        base = forward_of(trained.model.config._name_or_path, batch, trained.model.img_context_token_id)
    assert torch.allclose(merged, expected, atol=1e-5, rtol=1e-4), (merged - expected).abs().max()
    assert (base - expected).abs().max() > 1e-2  # training moved the weights: the comparison can fail
    assert json.loads((converted / "config.json").read_text())["max_dynamic_patch"] == 1  # the smoke tiling
