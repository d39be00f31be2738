"""The course's InternVL2 code has the official InternVL2-2B checkpoint layout: names, shapes, config keys."""

import json

import pytest

from course_utils.internvl import InternVLChatConfig
from course_utils.tiny_model import build_config, build_model


def official_internvl2_2b_layout():
    """Parameter names and shapes of OpenGVLab/InternVL2-2B, from its published architecture.

    InternViT-300M-448px: width 1024, 24 blocks, MLP 4096, patch 14 at 448 px (32x32 patches + class token),
    qkv bias, LayerNorm, layer scale. Projector: LayerNorm(4096) -> Linear(4096, 2048) -> GELU -> Linear(2048, 2048)
    (4096 = 1024 channels x 4 after the 0.5 pixel shuffle). InternLM2-1.8B: width 2048, 24 layers, 16 query heads
    and 8 key/value heads of 128, so wqkv has (16 + 2 * 8) * 128 = 4096 rows; SwiGLU 8192; vocabulary 92553.
    """
    shapes = {
        "vision_model.embeddings.class_embedding": (1, 1, 1024),
        "vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
        "vision_model.embeddings.patch_embedding.bias": (1024,),
        "vision_model.embeddings.position_embedding": (1, 1025, 1024),
        "mlp1.0.weight": (4096,), "mlp1.0.bias": (4096,),
        "mlp1.1.weight": (2048, 4096), "mlp1.1.bias": (2048,),
        "mlp1.3.weight": (2048, 2048), "mlp1.3.bias": (2048,),
        "language_model.model.tok_embeddings.weight": (92553, 2048),
        "language_model.model.norm.weight": (2048,),
        "language_model.output.weight": (92553, 2048),
    }
    for i in range(24):
        vit = f"vision_model.encoder.layers.{i}."
        shapes.update({
            vit + "attn.qkv.weight": (3072, 1024), vit + "attn.qkv.bias": (3072,),
            vit + "attn.proj.weight": (1024, 1024), vit + "attn.proj.bias": (1024,),
            vit + "mlp.fc1.weight": (4096, 1024), vit + "mlp.fc1.bias": (4096,),
            vit + "mlp.fc2.weight": (1024, 4096), vit + "mlp.fc2.bias": (1024,),
            vit + "norm1.weight": (1024,), vit + "norm1.bias": (1024,),
            vit + "norm2.weight": (1024,), vit + "norm2.bias": (1024,),
            vit + "ls1": (1024,), vit + "ls2": (1024,),
        })
        llm = f"language_model.model.layers.{i}."
        shapes.update({
            llm + "attention.wqkv.weight": (4096, 2048), llm + "attention.wo.weight": (2048, 2048),
            llm + "feed_forward.w1.weight": (8192, 2048), llm + "feed_forward.w3.weight": (8192, 2048),
            llm + "feed_forward.w2.weight": (2048, 8192),
            llm + "attention_norm.weight": (2048,), llm + "ffn_norm.weight": (2048,),
        })
    return shapes


def test_2b_preset_has_official_keys_and_shapes():
    model = build_model(build_config("internvl2-2b"), device="meta")
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = official_internvl2_2b_layout()
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    total = sum(t.numel() for t in model.parameters())
    assert 2.1e9 < total < 2.3e9  # "InternVL2-2B": 2.2 B parameters


def test_2b_preset_config_matches_official_values():
    config = build_config("internvl2-2b").to_dict()
    assert config["architectures"] == ["InternVLChatModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_internvl_chat.InternVLChatModel"
    assert (config["force_image_size"], config["downsample_ratio"], config["ps_version"]) == (448, 0.5, "v2")
    assert (config["min_dynamic_patch"], config["max_dynamic_patch"], config["use_thumbnail"]) == (1, 12, True)
    assert config["template"] == "internlm2-chat" and config["select_layer"] == -1
    assert config["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]
    assert config["llm_config"]["model_type"] == "internlm2"
    assert config["llm_config"]["rope_scaling"] == {"type": "dynamic", "factor": 2.0}
    assert config["vision_config"]["model_type"] == "intern_vit_6b"
    assert InternVLChatConfig(**config).num_image_token == 256  # (448 / 14)^2 * 0.5^2


def test_config_round_trips_through_json(tmp_path):
    config = build_config("tiny", vocab_size=321)
    config.save_pretrained(tmp_path)
    reloaded = InternVLChatConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert isinstance(on_disk["llm_config"], dict) and on_disk["llm_config"]["vocab_size"] == 321
    assert on_disk["vision_config"]["image_size"] == 224


def test_unsupported_llm_is_refused_with_a_clear_message():
    with pytest.raises(NotImplementedError, match="InternVL2-2B"):
        InternVLChatConfig(llm_config={"architectures": ["Qwen2ForCausalLM"]})
