"""Lesson 01's teaching code: the design patterns behave as their names say, and the counts are right."""

import inspect
import json
from pathlib import Path

import pytest
import torch

from course_utils import architectures
from course_utils.tiny_model import build_config, build_model

OFFICIAL_2B = json.loads((Path(__file__).parent / "fixtures" / "oracle" / "internvl2_2b_state_dict.json").read_text())


def built(pattern_class):
    torch.manual_seed(0)
    return pattern_class().eval()


def last_word_changed(text_ids):
    changed = text_ids.clone()
    changed[0, -1] = (text_ids[0, -1] + 1) % architectures.VOCAB
    return changed


def test_shared_decoder_is_causal_and_reads_the_image():
    module = built(architectures.SeparateEncodersSharedDecoder)
    image, text_ids = architectures.toy_inputs()
    logits, _ = module(image, text_ids)
    later, _ = module(image, last_word_changed(text_ids))
    assert torch.equal(logits[:, :-1], later[:, :-1])  # no position sees a word after it
    other_image, _ = module(image.flip(-1), text_ids)
    assert (other_image[:, -1] - logits[:, -1]).abs().max() > 1e-4


def test_joint_encoder_lets_patches_see_words():
    module = built(architectures.JointEncoder)
    image, text_ids = architectures.toy_inputs()
    logits, _ = module(image, text_ids)
    assert (module(image, last_word_changed(text_ids))[0][:, 0] - logits[:, 0]).abs().max() > 1e-4  # the first patch's output moves


def test_conversion_passes_no_gradient_from_the_answer_to_the_image():
    module = built(architectures.CrossModalConversion)
    image, text_ids = architectures.toy_inputs()
    image = image.clone().requires_grad_()
    logits, stages = module(image, text_ids)
    logits.sum().backward()
    assert image.grad is None  # the caption is a hard choice of token ids
    assert stages["caption ids"].dtype == torch.long


def test_cross_attention_gate_starts_closed():
    module = built(architectures.CrossAttentionDecoder)
    image, text_ids = architectures.toy_inputs()
    closed, _ = module(image, text_ids)
    assert torch.equal(closed, module(image.flip(-1), text_ids)[0])  # tanh(0) = 0: the image is not used yet
    with torch.no_grad():
        module.gate.fill_(1.0)
    opened, stages = module(image, text_ids)
    assert (opened - module(image.flip(-1), text_ids)[0]).abs().max() > 1e-4
    assert torch.allclose(stages["cross-attention weights"].sum(-1), torch.ones(1, text_ids.shape[1]))


def llm_parameters_by_hand(llm) -> int:
    """InternLM2's parameters from its configuration: embeddings and head, then per layer wqkv, wo, SwiGLU, 2 norms."""
    h, head_dim = llm.hidden_size, llm.hidden_size // llm.num_attention_heads
    wqkv = (llm.num_attention_heads + 2 * llm.num_key_value_heads) * head_dim * h
    layer = wqkv + h * h + 3 * h * llm.intermediate_size + 2 * h
    return 2 * llm.vocab_size * h + llm.num_hidden_layers * layer + h


def test_parameter_table_counts_what_the_configurations_say():
    rows = {row["model"]: row for row in architectures.parameter_table()}
    assert {k: rows["InternVL2-2B"][k] for k in OFFICIAL_2B["parameters"]} == OFFICIAL_2B["parameters"]
    config_8b = architectures.published_config("InternVL2-8B")
    assert rows["InternVL2-8B"]["language_model"] == llm_parameters_by_hand(config_8b.llm_config)
    folded, width = 4 * config_8b.vision_config.hidden_size, config_8b.llm_config.hidden_size
    assert rows["InternVL2-8B"]["mlp1"] == 2 * folded + folded * width + width + width * width + width
    assert rows["InternVL2-1B"]["total"] is None and "Qwen2ForCausalLM" in rows["InternVL2-1B"]["note"]


def test_component_counts_add_up_to_the_model():
    model = build_model(build_config("tiny", vocab_size=100), device="meta")
    counts = architectures.component_parameter_counts(model)
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts["language_model"] == llm_parameters_by_hand(model.config.llm_config)


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="InternVL2-2B"):
        architectures.published_config("InternVL2-3B")


def test_vit_groups_cover_every_parameter_of_both_vits():
    internvit, timm_vit = architectures.internvit_and_timm_vit()
    for vit in (internvit, timm_vit):
        assert sum(architectures.vit_parameter_groups(vit).values()) == sum(p.numel() for p in vit.parameters())
    rows = architectures.block_side_by_side(internvit, timm_vit)
    assert [row["parameter"] for row in rows if row["timm ViT-L/14"] == "-"] == ["ls1", "ls2"]


def test_show_source_puts_the_real_code_on_the_page():
    shown = architectures.show_source(architectures.format_count).data
    assert inspect.getsource(architectures.format_count) in shown


def test_sample_photo_is_drawn_at_the_asked_size_and_repeatable():
    first, again = architectures.sample_photo((80, 60), seed=3), architectures.sample_photo((80, 60), seed=3)
    assert first.size == (80, 60) and first.tobytes() == again.tobytes()
