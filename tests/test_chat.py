"""The model-card chat API through course_utils.chat: loading, tiles for the model, streaming."""

import pytest
from PIL import Image

from course_utils.chat import image_pixel_values, load_model, stream_chat

GREEDY = dict(max_new_tokens=16, do_sample=False)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_path):
    return load_model(tiny_model_path, device="cpu")


def test_load_model_uses_float32_on_cpu_and_eval_mode(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert str(model.dtype) == "torch.float32" and not model.training
    assert tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>") != tokenizer.unk_token_id


def test_image_tiles_follow_the_model_config(model_and_tokenizer):
    model, _ = model_and_tokenizer
    assert model.config.max_dynamic_patch == 1  # the tiny base sees one 224-px tile a picture
    assert tuple(image_pixel_values(model, Image.new("RGB", (672, 224))).shape) == (1, 3, 224, 224)
    tiles = image_pixel_values(model, Image.new("RGB", (672, 224)), max_num=6)  # 3:1 -> 3 tiles + thumbnail
    assert tuple(tiles.shape) == (4, 3, 224, 224)


def test_streamed_pieces_join_to_the_chat_answer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tiles = image_pixel_values(model, Image.new("RGB", (300, 300), (200, 50, 50)))
    pieces = list(stream_chat(model, tokenizer, tiles, "这是什么菜？", GREEDY))
    assert len(pieces) > 1  # it really streams
    assert "".join(pieces).strip() == model.chat(tokenizer, tiles, "这是什么菜？", GREEDY)


def test_stream_chat_raises_the_models_error_in_the_callers_thread(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tiles = image_pixel_values(model, Image.new("RGB", (300, 300)))
    # an empty history is not "no history": no <image> placeholder is added, so the image has nowhere to go
    with pytest.raises(ValueError, match="IMG_CONTEXT"):
        list(stream_chat(model, tokenizer, tiles, "问题", GREEDY, history=[]))


def test_chat_prompt_is_the_prompt_chat_builds(model_and_tokenizer):
    from course_utils.chat import chat_prompt

    model, _ = model_and_tokenizer
    prompt = chat_prompt(model, "<image>\n问题", num_patches_list=[2])
    assert prompt == model.build_prompt("<image>\n问题", num_patches_list=[2])
    assert prompt.count("<IMG_CONTEXT>") == 2 * model.num_image_token
