"""The course's InternVL2 code reproduces what OpenGVLab's own implementation computes.

``tests/fixtures/oracle`` holds two small random models (an InternViT-300M-style and an InternViT-6B-style
vision tower, each with InternLM2) and the official implementation's float32 outputs on fixed inputs; its
README says how each figure was made. Every figure is checked under eager attention (as the reference ran) and
under SDPA (what training and the default fast path use).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from course_utils.internvl import InternVLChatConfig, InternVLChatModel

ORACLE_DIR = Path(__file__).parent / "fixtures" / "oracle"
CASES = ("internvl2_2b_style", "internvit_6b_style")
ATTENTION_BACKENDS = ("eager", "sdpa")
TOLERANCE = 1e-4  # float32 kernels differ by ~1e-6; a swapped weight or a shifted token moves figures by >1e-2


def load_oracle_model(case: str, attention: str) -> InternVLChatModel:
    """The course's model class built from the case's ``config.json``, its weights loaded strictly."""
    case_dir = ORACLE_DIR / case
    config = InternVLChatConfig.from_pretrained(case_dir)
    config.llm_config.attn_implementation = attention
    model = InternVLChatModel(config)
    model.load_state_dict(load_file(case_dir / "model.safetensors"), strict=True)
    model.img_context_token_id = config.img_context_token_id
    return model.eval()


@pytest.fixture(scope="module", params=[(c, a) for c in CASES for a in ATTENTION_BACKENDS], ids="-".join)
def oracle(request):
    """(case, attention backend, loaded model, the case's inputs and expected outputs)."""
    case, attention = request.param
    return case, attention, load_oracle_model(case, attention), load_file(ORACLE_DIR / case / "cases.safetensors")


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)


def test_vit_features_match(oracle):
    _, _, model, cases = oracle
    with torch.no_grad():
        features = model.extract_feature(cases["pixel_values"])
    assert_close(features, cases["expected_vit_embeds"])


def test_padded_batch_logits_and_loss_match(oracle):
    _, _, model, cases = oracle
    with torch.no_grad():
        output = model(
            pixel_values=cases["pixel_values"],
            input_ids=cases["input_ids"],
            attention_mask=cases["attention_mask"],
            position_ids=cases["position_ids"],
            image_flags=cases["image_flags"],
            labels=cases["labels"],
        )
    real = cases["attention_mask"].bool()  # padding rows are arbitrary in any implementation
    assert_close(output.logits[real], cases["expected_logits"][real])
    assert_close(output.loss.reshape(1), cases["expected_loss"])


def test_greedy_generation_matches_exactly(oracle):
    _, _, model, cases = oracle
    generated = model.generate(
        pixel_values=cases["pixel_values"],
        input_ids=cases["input_ids"],
        attention_mask=cases["attention_mask"],
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=299,
        pad_token_id=2,
    )
    assert generated.tolist() == cases["expected_generated_ids"].tolist()


def test_long_sequence_logits_match_with_rotary_scaling(oracle):
    case, attention, _, cases = oracle
    fresh = load_oracle_model(case, attention)  # as the reference ran it: no earlier call on this model
    long_ids = cases["long_input_ids"]
    assert long_ids.shape[1] > fresh.config.llm_config.max_position_embeddings  # the scaling is in play
    with torch.no_grad():
        logits = fresh.language_model(input_ids=long_ids).logits
    assert_close(logits, cases["expected_long_logits"])

