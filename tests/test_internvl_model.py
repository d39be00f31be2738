"""Behaviour of the course's InternVL2 code: the pieces against their definitions, the whole model end to end."""

import cmath
import math

import pytest
import torch
from PIL import Image

from course_utils.internvl import InternVLChatModel, load_image, pixel_shuffle
from course_utils.internvl.modeling_internlm2 import (
    InternLM2Attention,
    InternLM2RotaryEmbedding,
    apply_rotary,
    attention_backend,
)
from course_utils.tiny_model import build_config, build_model, copy_remote_code

GREEDY = dict(max_new_tokens=12, do_sample=False)


def test_pixel_shuffle_folds_each_2x2_block_in_published_order():
    features = torch.randn(2, 6, 6, 5)
    out = pixel_shuffle(features, 0.5, "v2")
    assert out.shape == (2, 3, 3, 20)
    for i in range(3):
        for j in range(3):
            block = [features[:, 2 * i, 2 * j], features[:, 2 * i, 2 * j + 1],
                     features[:, 2 * i + 1, 2 * j], features[:, 2 * i + 1, 2 * j + 1]]
            assert torch.equal(out[:, i, j], torch.cat(block, dim=-1))


def test_wqkv_packs_each_key_value_group_as_its_queries_then_key_then_value():
    config = build_config("tiny", vocab_size=64).llm_config  # 4 query heads, 2 key/value heads of 32
    attention = InternLM2Attention(config, layer_idx=0)
    groups, head_dim = attention.num_key_value_groups, attention.head_dim
    packed = torch.arange((4 + 2 * 2) * head_dim, dtype=torch.float32)[None, None]
    query, key, value = attention.split_heads(packed)

    def rows(slot):
        return packed[0, 0, slot * head_dim:(slot + 1) * head_dim]

    for head in range(4):
        group, index = divmod(head, groups)
        assert torch.equal(query[0, head, 0], rows(group * (groups + 2) + index))
    for group in range(2):
        assert torch.equal(key[0, group, 0], rows(group * (groups + 2) + groups))
        assert torch.equal(value[0, group, 0], rows(group * (groups + 2) + groups + 1))


def test_rotary_rotates_each_half_pair_by_position_times_frequency():
    head_dim, base = 8, 10000.0
    rotary = InternLM2RotaryEmbedding(head_dim, max_position_embeddings=64, base=base)
    positions = torch.tensor([[0, 3, 7]])
    query = torch.randn(1, 1, 3, head_dim)
    rotated, _ = apply_rotary(query, query, *rotary(positions, torch.float32))
    half = head_dim // 2
    for t, position in enumerate(positions[0].tolist()):
        for i in range(half):
            angle = position / base ** (2 * i / head_dim)
            z = complex(query[0, 0, t, i], query[0, 0, t, i + half]) * cmath.exp(1j * angle)
            assert rotated[0, 0, t, i].item() == pytest.approx(z.real, abs=1e-5)
            assert rotated[0, 0, t, i + half].item() == pytest.approx(z.imag, abs=1e-5)


def test_dynamic_rope_scaling_changes_frequencies_only_past_the_trained_length():
    rotary = InternLM2RotaryEmbedding(128, 100, 1e6, {"type": "dynamic", "factor": 2.0})
    plain = InternLM2RotaryEmbedding(128, 100, 1e6)
    assert torch.equal(rotary.inverse_frequencies(100, "cpu"), plain.inverse_frequencies(100, "cpu"))
    assert (rotary.inverse_frequencies(400, "cpu")[1:] < plain.inverse_frequencies(400, "cpu")[1:]).all()


@pytest.mark.parametrize("requested", ["flash_attention_2", "sdpa", None])
def test_attention_requests_other_than_eager_run_sdpa_without_flash_attn(requested):
    config = build_config("tiny", vocab_size=64).llm_config
    config.attn_implementation = requested
    assert attention_backend(config) == "sdpa"
    config.attn_implementation = "eager"
    assert attention_backend(config) == "eager"


def test_eager_and_sdpa_attention_agree_on_a_padded_batch():
    config = build_config("tiny", vocab_size=64)
    model = build_model(config, seed=3).float()
    ids = torch.randint(8, 64, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0  # left padding, as batch_chat makes
    sdpa = model.language_model(input_ids=ids, attention_mask=mask).logits
    for layer in model.language_model.model.layers:
        layer.attention.backend = "eager"
    eager = model.language_model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(sdpa).all()
    assert torch.allclose(sdpa[mask.bool()], eager[mask.bool()], atol=1e-4)


def test_cached_generation_equals_recomputing_the_whole_sequence():
    model = build_model(build_config("tiny", vocab_size=64), seed=1).float()
    prompt = torch.randint(8, 64, (1, 7))
    generated = model.language_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                              do_sample=False, pad_token_id=2, eos_token_id=None)
    sequence = prompt
    for _ in range(6):
        next_token = model.language_model(input_ids=sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], dim=1)
    assert torch.equal(generated, sequence)


def test_tiny_model_folder_has_the_official_file_layout(tiny_model_path):
    names = {p.name for p in tiny_model_path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "configuration_internvl_chat.py", "configuration_intern_vit.py", "configuration_internlm2.py",
            "modeling_internvl_chat.py", "modeling_intern_vit.py", "modeling_internlm2.py",
            "conversation.py"} <= names
    assert sum(p.stat().st_size for p in tiny_model_path.iterdir()) < 50 * 2**20


def test_tokenizer_has_single_id_special_tokens_and_round_trips_chinese(tiny_model_and_tokenizer):
    _, tokenizer = tiny_model_and_tokenizer
    for token in ("<img>", "</img>", "<IMG_CONTEXT>", "<|im_start|>", "<|im_end|>"):
        assert tokenizer.tokenize(f"x{token}y").count(token) == 1
    text = "图片中的食物通常属于哪个菜系？锅包肉 (Guo Bao Rou) 🍜"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|><|im_start|>user\n你好<|im_end|><|im_start|>assistant\n")  # internlm2-chat


def test_save_and_reload_give_identical_logits(tiny_model_and_tokenizer, tmp_path):
    from transformers import AutoModel

    model, tokenizer = tiny_model_and_tokenizer
    model.save_pretrained(tmp_path)
    copy_remote_code(tmp_path)  # save_pretrained writes config and weights, not the remote-code files
    reloaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True, torch_dtype=torch.float32).eval()
    pixel_values = load_image(Image.new("RGB", (300, 200), (180, 40, 40)), image_size=224, max_num=6)
    model.img_context_token_id = reloaded.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    prompt = model.build_prompt("<image>\n这是什么菜？", num_patches_list=[pixel_values.shape[0]])
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(pixel_values, input_ids=input_ids).logits, reloaded(pixel_values, input_ids=input_ids).logits)


def test_prompt_holds_256_tokens_per_tile_at_448_and_num_image_token_per_tile_in_general(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    assert model.num_image_token == (224 // 14) ** 2 // 4 == 64
    prompt = model.build_prompt("<image>\n问题", num_patches_list=[3])
    assert prompt.count("<IMG_CONTEXT>") == 3 * 64
    assert "<img>" + "<IMG_CONTEXT>" * 192 + "</img>\n问题<|im_end|><|im_start|>assistant\n" in prompt
    assert prompt.startswith("<|im_start|>system\n")


def test_greedy_chat_is_deterministic_and_continues_history(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    pixel_values = load_image(Image.new("RGB", (448, 224), (30, 160, 60)), image_size=224, max_num=6)
    first, history = model.chat(tokenizer, pixel_values, "图片里有什么？", GREEDY, return_history=True)
    assert model.chat(tokenizer, pixel_values, "图片里有什么？", GREEDY) == first
    assert history == [("<image>\n图片里有什么？", first)]
    _, longer = model.chat(tokenizer, pixel_values, "再说一遍", GREEDY, history=history, return_history=True)
    assert len(longer) == 2


def test_batch_chat_answers_as_single_chats_do(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    images = [Image.new("RGB", (224, 224), (200, 200, 30)), Image.new("RGB", (600, 200), (20, 20, 200))]
    pixel_values = [load_image(img, image_size=224, max_num=6) for img in images]
    questions = ["这道菜是什么颜色？", "图片中的食物通常属于哪个菜系？请回答"]
    batched = model.batch_chat(tokenizer, torch.cat(pixel_values), questions, GREEDY,
                               num_patches_list=[p.shape[0] for p in pixel_values])
    single = [model.chat(tokenizer, p, q, GREEDY) for p, q in zip(pixel_values, questions)]
    assert batched == single


def test_mismatched_image_tokens_raise_a_clear_error(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    pixel_values = torch.zeros(2, 3, 224, 224)
    with pytest.raises(ValueError, match="does not add up"):
        model.chat(tokenizer, pixel_values, "问题", GREEDY, num_patches_list=[1])


def test_model_class_is_loaded_from_the_model_folder_remote_code(tiny_model_and_tokenizer):
    model, _ = tiny_model_and_tokenizer
    assert type(model).__name__ == "InternVLChatModel"
    assert type(model) is not InternVLChatModel  # transformers' copy of the folder's modeling file
    assert math.isclose(model.downsample_ratio, 0.5)


def test_model_card_loading_call_works_and_use_flash_attn_false_means_eager(tiny_model_path):
    from transformers import AutoModel

    # the call from the InternVL2 model card
    model = AutoModel.from_pretrained(tiny_model_path, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True,
                                      use_flash_attn=True, trust_remote_code=True).eval()
    assert model.language_model.model.layers[0].attention.backend == "sdpa"
    eager = AutoModel.from_pretrained(tiny_model_path, use_flash_attn=False, trust_remote_code=True)
    assert eager.language_model.model.layers[0].attention.backend == "eager"


def test_vision_model_supports_the_6b_style_rms_norm_and_qk_normalisation():
    from course_utils.internvl import InternVisionConfig, InternVisionModel

    config = InternVisionConfig(image_size=56, patch_size=14, hidden_size=32, num_attention_heads=4,
                                intermediate_size=64, num_hidden_layers=1, qkv_bias=False,
                                qk_normalization=True, norm_type="rms_norm")
    model = InternVisionModel(config).eval()
    keys = set(model.state_dict())
    assert {"encoder.layers.0.attn.q_norm.weight", "encoder.layers.0.attn.k_norm.weight"} <= keys
    assert "encoder.layers.0.norm1.bias" not in keys and "encoder.layers.0.attn.qkv.bias" not in keys
    output = model(torch.randn(2, 3, 56, 56))
    assert output.last_hidden_state.shape == (2, 1 + 16, 32)
    assert torch.equal(output.pooler_output, output.last_hidden_state[:, 0])
