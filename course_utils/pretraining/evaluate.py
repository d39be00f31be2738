"""What the tiny base model knows, measured on pictures it never saw: descriptions, questions, FoodieQA's questions.

* **descriptions**: "describe the image" on held-out pictures; each of the six attributes a description names
  (rim colour and pattern, ingredient, cooking method, piece count, plate position) is right or wrong;
* **questions**: one open question per attribute, the reply right when it names the attribute's value;
* **FoodieQA's four questions** in lesson 03's letter style: the base should know the ingredient and the cooking
  method (general food knowledge) and be at chance on cuisine and region (what fine-tuning adds).
"""

from __future__ import annotations

import random
from pathlib import Path

from ..foodieqa.prompts import format_question, parse_reply
from ..foodieqa.synthetic import QUESTIONS, make_question
from .corpus import ATTRIBUTES, LANGUAGES, QUESTIONS_PER_PICTURE, attribute_value, draw_sample, read_description

HELDOUT_SEED = 1  # the shipped weights were pretrained on the corpus of seed 0: these pictures are new to them
# Each part asks about pictures of its own: the open questions from picture 100,000 on, the lettered ones from 200,000.
OPEN_QUESTIONS_FROM, LETTERED_QUESTIONS_FROM = 100_000, 200_000


def load_for_evaluation(model_dir: str | Path, device: str = "cpu"):
    """(model in float32 on ``device``, tokenizer) of a course-format model folder."""
    import torch
    from transformers import AutoTokenizer

    from ..internvl import InternVLChatModel

    model = InternVLChatModel.from_pretrained(model_dir, torch_dtype=torch.float32).to(device).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def answer_all(model, tokenizer, samples, max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy ``batch_chat`` replies to (image, question) pairs, one 224-px tile each."""
    import torch

    from ..internvl.preprocessing import load_image

    size = model.config.force_image_size
    replies = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        pixels = torch.cat([load_image(image, size, max_num=1) for image, _ in chunk]).to(model.device)
        replies += model.batch_chat(tokenizer, pixels, [question for _, question in chunk],
                                    dict(max_new_tokens=max_new_tokens, do_sample=False),
                                    num_patches_list=[1] * len(chunk))
    return replies


def share(right: int, total: int) -> float:
    return round(right / total, 4) if total else 0.0


def evaluate_base(model_dir: str | Path, device: str = "cpu", pictures: int = 120) -> dict:
    """Held-out accuracy of the base model (see the module docstring); ``pictures`` per part."""
    model, tokenizer = load_for_evaluation(model_dir, device)
    result: dict = {"pictures": pictures, "seed": HELDOUT_SEED}

    # one sample per picture: sample k * QUESTIONS_PER_PICTURE is the first of picture k
    def heldout(number: int, **kwargs):
        return draw_sample(HELDOUT_SEED, number * QUESTIONS_PER_PICTURE, **kwargs)

    described = [heldout(index, task="describe", language=LANGUAGES[index % 2]) for index in range(pictures)]
    replies = answer_all(model, tokenizer, [(s.image, s.question) for s in described], max_new_tokens=96)
    per_attribute = {attribute: 0 for attribute in ATTRIBUTES}
    for sample, reply in zip(described, replies):
        found = read_description(reply, sample.language)
        for attribute in ATTRIBUTES:
            per_attribute[attribute] += found.get(attribute) == attribute_value(sample.facts, attribute, sample.language)
    result["description"] = {a: share(n, pictures) for a, n in per_attribute.items()}
    result["description_examples"] = [{"language": s.language, "reply": r} for s, r in zip(described[:4], replies)]

    asked = [heldout(OPEN_QUESTIONS_FROM + index, task="question", attribute=ATTRIBUTES[index % len(ATTRIBUTES)])
             for index in range(pictures)]
    replies = answer_all(model, tokenizer, [(s.image, s.question) for s in asked], max_new_tokens=16)
    by_attribute: dict[str, list[bool]] = {attribute: [] for attribute in ATTRIBUTES}
    for sample, reply in zip(asked, replies):
        by_attribute[sample.attribute].append(
            attribute_value(sample.facts, sample.attribute, sample.language).lower() in reply.lower())
    result["questions"] = {a: share(sum(v), len(v)) for a, v in by_attribute.items()}

    rng = random.Random(HELDOUT_SEED)
    foodieqa, samples = [], []
    for index in range(pictures):
        picture = heldout(LETTERED_QUESTIONS_FROM + index, task="describe")
        question_type = QUESTIONS[index % len(QUESTIONS)][0]
        record = make_question(picture.facts.dish, question_type, rng.randrange(4), f"q{index}", {}, rng)
        foodieqa.append(record)
        samples.append((picture.image, format_question(record, "mcq")))
    replies = answer_all(model, tokenizer, samples, max_new_tokens=4)
    by_type: dict[str, list[bool]] = {kind: [] for kind, _, _ in QUESTIONS}
    for record, reply in zip(foodieqa, replies):
        by_type[record["question_type"]].append(parse_reply(reply, record["choices"], "mcq") == int(record["answer"]))
    result["foodieqa_letter"] = {kind: share(sum(v), len(v)) for kind, v in by_type.items()}

    description_total = sum(per_attribute.values()) / (pictures * len(ATTRIBUTES))
    result["summary"] = {
        "description_attributes_right": round(description_total, 4),
        "open_questions_right": share(sum(sum(v) for v in by_attribute.values()), pictures),
        "foodieqa_letter": result["foodieqa_letter"],
    }
    return result
