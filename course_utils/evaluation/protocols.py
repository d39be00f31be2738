"""The questions an evaluation asks: the course's held-out split, or the FoodieQA paper's whole single-image set.

Every question becomes one plain dict (JSON-ready, so results files carry it):

    {"question_id", "image" (absolute path), "prompt" (the user's text), "choices" (as shown, 4 strings),
     "answer_index" (0-3), "answer_style" ("mcq" | "original": how to read the reply), "food_id", "food_name",
     "food_type" (cuisine), "question_type"}

* :func:`heldout_questions` - lesson 03's ``test.json`` (dishes never seen in training) in either prompt style of
  lesson 03: ``mcq`` (options with letters, answer a letter) or ``original`` (the question alone, the reply names
  the option's text).
* :func:`paper_questions` - every valid record of ``sivqa_tidy.json`` with the authors' own zero-shot prompt
  (their template 0) in Chinese (``zh``) or English (``en``): the options listed as ``（A) ...`` and the reply
  expected to begin with a letter. This is the protocol of the paper's table, so a model's figure can sit in it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..foodieqa.prompts import OPTION_LETTERS, check_style, format_question

PAPER_LANGUAGES = ("zh", "en")
# The FoodieQA authors' single-image prompt, template 0 (model-eval/scripts/sivqa_utils.py), per language.
PAPER_PROMPTS = {
    "zh": "{question} 选项有: {options}, 请根据上图从所提供的选项中选择一个正确答案，为（",
    "en": "{question} Here are the options: {options} If had to select one of the options, my answer would be (",
}


def question_dict(record_id: str, image: Path, prompt: str, choices: list[str], answer: int, answer_style: str,
                  food_id, food_name: str, food_type: str, question_type: str) -> dict:
    return {"question_id": record_id, "image": str(image), "prompt": prompt, "choices": list(choices),
            "answer_index": answer, "answer_style": answer_style, "food_id": food_id, "food_name": food_name,
            "food_type": food_type, "question_type": question_type}


def heldout_questions(manifest: dict, style: str) -> list[dict]:
    """The held-out questions of lesson 03's converted data (``load_manifest()``) asked in prompt ``style``."""
    check_style(style)
    items = json.loads(Path(manifest["test_path"]).read_text(encoding="utf-8"))
    image_folder = Path(manifest["image_folder"])
    return [
        question_dict(item["question_id"], image_folder / item["image"],
                      format_question({"question": item["question"], "choices": item["choices"]}, style),
                      item["choices"], item["answer_index"], style, item["food_id"], item["food_name"],
                      item["food_type"], item["question_type"])
        for item in items
    ]


def paper_prompt(question: str, choices: list[str], language: str) -> str:
    """The authors' template-0 prompt: the question, the options as ``（A) x`` lines, and a cue for the letter."""
    options = "".join(f"（{letter}) {choice.strip()}\n" for letter, choice in zip(OPTION_LETTERS, choices))
    return PAPER_PROMPTS[language].format(question=question.strip(), options=options)


def paper_questions(data_root: str | Path, language: str = "zh", report=None) -> tuple[list[dict], int]:
    """(questions, skipped): every valid ``sivqa_tidy.json`` record asked as the paper does, in ``language``.

    Records that fail lesson 03's validation (pass its ``report`` to validate once for both languages), or have no
    English text for ``en``, are skipped and counted.
    """
    from ..foodieqa import validate_foodieqa
    from ..foodieqa.layout import answer_index

    if language not in PAPER_LANGUAGES:
        raise ValueError(f"unknown language {language!r}; choose one of {', '.join(PAPER_LANGUAGES)}")
    report = report or validate_foodieqa(data_root)
    if report.root != Path(data_root).resolve():
        raise ValueError(f"the validation report is of {report.root}, not of {data_root}")
    questions = []
    for record in report.valid_records:
        question, choices = (record["question"], record["choices"]) if language == "zh" else (
            record.get("question_en"), record.get("choices_en"))
        if not isinstance(question, str) or not isinstance(choices, list) or len(choices) != len(OPTION_LETTERS):
            continue
        meta = record["food_meta"]
        questions.append(question_dict(
            record["question_id"], report.root / meta["food_file"], paper_prompt(question, choices, language),
            choices, answer_index(record), "mcq", meta["id"], meta["food_name"], meta["food_type"],
            record["question_type"]))
    return questions, report.total - len(questions)


def sample_evenly(questions: list[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` questions, evenly spaced through the list (so spread over its dishes); all when None."""
    if limit is None or limit >= len(questions):
        return list(questions)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return [questions[index * len(questions) // limit] for index in range(limit)]
