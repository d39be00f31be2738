"""The static-cache decoding loop chooses exactly the tokens transformers' generate() chooses."""

import pytest
import torch

from course_utils.internvl import InternLM2ForCausalLM
from course_utils.tiny_model import build_config


@pytest.fixture(scope="module")
def language_model_and_prompts():
    torch.manual_seed(4)
    language_model = InternLM2ForCausalLM(build_config("tiny", vocab_size=256).llm_config).eval()
    generator = torch.Generator().manual_seed(0)
    embeds = language_model.get_input_embeddings()(torch.randint(8, 256, (3, 18), generator=generator))
    mask = torch.ones(3, 18, dtype=torch.long)
    mask[1, :5] = 0  # left padding, as batch_chat makes
    mask[2, :11] = 0
    return language_model, embeds, mask


def test_greedy_decode_equals_generate_on_a_left_padded_batch_with_end_tokens(language_model_and_prompts):
    language_model, embeds, mask = language_model_and_prompts
    settings = dict(max_new_tokens=20, do_sample=False, pad_token_id=2)
    free_running = language_model.generate(inputs_embeds=embeds, attention_mask=mask, eos_token_id=None, **settings)
    assert torch.equal(language_model.decode(embeds, mask, eos_token_id=None, **settings), free_running)

    # end tokens that rows 0 and 1 write at different steps: they stop early, row 2 runs on
    end_tokens = [int(free_running[0, 3]), int(free_running[1, 7])]
    stopped = language_model.generate(inputs_embeds=embeds, attention_mask=mask, eos_token_id=end_tokens, **settings)
    decoded = language_model.decode(embeds, mask, eos_token_id=end_tokens, **settings)
    assert torch.equal(decoded, stopped)
    assert (decoded == 2).any()  # finished rows were padded


def test_decode_reuses_its_cache_for_a_shorter_prompt_without_stale_keys(language_model_and_prompts):
    language_model, embeds, mask = language_model_and_prompts
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=2)
    language_model.decode(embeds, mask, **settings)  # fills the cache columns a shorter prompt leaves unused
    shorter, shorter_mask = embeds[:, 4:], mask[:, 4:]
    expected = language_model.generate(inputs_embeds=shorter, attention_mask=shorter_mask, **settings)
    assert torch.equal(language_model.decode(shorter, shorter_mask, **settings), expected)


def test_decode_rejects_settings_it_does_not_implement(language_model_and_prompts):
    language_model, embeds, mask = language_model_and_prompts
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        language_model.decode(embeds, mask, max_new_tokens=4, no_repeat_ngram_size=2)
