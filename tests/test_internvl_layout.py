"""The course's InternVL2 code has the official InternVL2-2B checkpoint layout: names, shapes, config keys."""

import json
from pathlib import Path

import pytest

from course_utils.internvl import InternVLChatConfig
from course_utils.tiny_model import build_config, build_model

OFFICIAL_2B_LAYOUT = Path(__file__).parent / "fixtures" / "oracle" / "internvl2_2b_state_dict.json"
PARTS = ("vision_model", "mlp1", "language_model")


def test_2b_preset_builds_the_official_state_dict():
    """Every name and shape, and the parameter counts, as OpenGVLab's implementation builds InternVL2-2B."""
    official = json.loads(OFFICIAL_2B_LAYOUT.read_text())
    model = build_model(build_config("internvl2-2b"), device="meta")
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    expected = official["state_dict"]
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    counts = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in PARTS}
    counts["total"] = sum(p.numel() for p in model.parameters())
    assert counts == official["parameters"]


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
