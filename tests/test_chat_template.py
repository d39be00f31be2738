"""One prompt format for the course's own model: the tokenizer's chat template (what LMDeploy renders with),
``model.chat``'s conversation and XTuner's training dataset write the same tokens.

A model answers best in the format it was trained on; on the earlier tiny model the three formats differed
(newlines between turns, the system message) and cost it up to 14 points of held-out accuracy.
"""

from __future__ import annotations

import json

from course_utils.internvl.conversation import INTERNVL_SYSTEM_MESSAGE

QUESTION = "图片中的食物通常属于哪个菜系？\n（A) 川菜\n（B) 粤菜\n（C) 鲁菜\n（D) 湘菜\n请直接回答选项的字母。"
TILES = 1


def image_placeholder(model) -> str:
    return "<img>" + "<IMG_CONTEXT>" * model.num_image_token * TILES + "</img>"


def model_chat_ids(model, tokenizer) -> list[int]:
    """What ``model.chat`` feeds the model: its conversation template, tokenized as it tokenizes (``<s>`` first)."""
    prompt = model.build_prompt("<image>\n" + QUESTION, None, [TILES])
    return tokenizer(prompt)["input_ids"]


def chat_template_ids(tokenizer, placeholder: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{placeholder}\n{QUESTION}"})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def xtuner_sample(model_path, tmp_path) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one training sample as the tiny LoRA config's XTuner dataset encodes it."""
    from mmengine.config import Config
    from PIL import Image

    from course_utils.training.config import config_path
    from course_utils.training.xtuner_patches import CourseInternVLDataset

    Image.new("RGB", (224, 224), (200, 30, 30)).save(tmp_path / "dish.jpg")
    conversation = [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": "B"}]
    (tmp_path / "train.json").write_text(json.dumps([{"id": 0, "image": "dish.jpg", "conversations": conversation}]))
    config = Config.fromfile(str(config_path("internvl2_tiny_lora_foodieqa.py")))
    dataset = CourseInternVLDataset(model_path=str(model_path), template=config.prompt_template,
                                    data_paths=str(tmp_path / "train.json"), image_folders=str(tmp_path),
                                    max_length=1024)
    sample = dataset[0]
    input_ids, labels = list(sample["input_ids"]), list(sample["labels"])
    prompt_length = labels.count(-100)
    return input_ids[:prompt_length], input_ids[prompt_length:]


def test_model_chat_the_tokenizer_template_and_xtuner_write_the_same_prompt(tiny_model_and_tokenizer,
                                                                           tiny_model_path, tmp_path):
    model, tokenizer = tiny_model_and_tokenizer
    placeholder = image_placeholder(model)
    served = model_chat_ids(model, tokenizer)
    assert chat_template_ids(tokenizer, placeholder) == served
    # the course's engines send the system message themselves: the same prompt again
    assert chat_template_ids(tokenizer, placeholder, system=INTERNVL_SYSTEM_MESSAGE) == served
    prompt, answer = xtuner_sample(tiny_model_path, tmp_path)
    assert prompt == served
    assert tokenizer.decode(answer) == "B<|im_end|>"  # trained to stop where every engine stops


def test_lmdeploy_renders_the_same_prompt(tiny_model_and_tokenizer, tiny_model_path):
    """LMDeploy 0.10 renders a model's conversation with the tokenizer's chat template (its HFChatTemplate) and
    puts the image before the question, as the course's LMDeploy engine sends it."""
    from lmdeploy.model import HFChatTemplate
    from lmdeploy.tokenizer import Tokenizer

    model, tokenizer = tiny_model_and_tokenizer
    placeholder = image_placeholder(model)
    messages = [{"role": "system", "content": INTERNVL_SYSTEM_MESSAGE},
                {"role": "user", "content": f"{placeholder}\n{QUESTION}"}]
    prompt = HFChatTemplate(model_path=str(tiny_model_path)).messages2prompt(messages)
    assert Tokenizer(str(tiny_model_path)).encode(prompt) == model_chat_ids(model, tokenizer)
