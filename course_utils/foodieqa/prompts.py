"""Prompt styles for FoodieQA questions, and how to score a model's reply in each.

* ``original`` - the original lesson's: the question alone; the target is the right choice's text followed by
  ``，图中的菜是`` and the dish name. A reply is scored by which choice text it names first.
* ``mcq`` - the FoodieQA authors' multiple-choice form: options ``（A) ...`` in the prompt; the target is the
  letter. A reply is scored by the first standalone letter A-D (or, failing that, by a choice's text).
"""

from __future__ import annotations

import re

from .layout import answer_index

PROMPT_STYLES = ("mcq", "original")
# What lesson 03 converts to by default: the original lesson's answer text. The tiny base answers letters at chance
# (its pretraining corpus asks half its questions with letters, and a model of its size did not learn to match an
# option to its letter), so only this style is learnt on the default; lesson 05 measures both.
DEFAULT_STYLE = "original"
OPTION_LETTERS = "ABCD"
DISH_NAME_LINK = "，图中的菜是"
MCQ_INSTRUCTION = "请直接回答选项的字母。"
_LETTER = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def check_style(style: str) -> str:
    """``style`` if it is a known prompt style; ValueError naming the choices otherwise."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    return style


def format_options(choices: list[str]) -> str:
    """The options as the FoodieQA authors list them: ``（A) 川菜`` one per line."""
    return "\n".join(f"（{letter}) {choice.strip()}" for letter, choice in zip(OPTION_LETTERS, choices))


def format_question(record: dict, style: str) -> str:
    """The user's text for a question (the ``<image>`` tag is added by the converter)."""
    question = record["question"].strip()
    if check_style(style) == "original":
        return question
    return f"{question}\n{format_options(record['choices'])}\n{MCQ_INSTRUCTION}"


def build_target(record: dict, style: str) -> str:
    """The reply the model is trained to give."""
    index = answer_index(record)
    if check_style(style) == "original":
        return record["choices"][index].strip() + DISH_NAME_LINK + record["food_meta"]["food_name"]
    return OPTION_LETTERS[index]


def choice_named_first(reply: str, choices: list[str]) -> int | None:
    """Index of the choice whose text appears earliest in ``reply`` (the longest one on a tie); None if none does."""
    texts = [c.strip() for c in choices]
    found = [(reply.find(text), -len(text), i) for i, text in enumerate(texts) if text and text in reply]
    return min(found)[2] if found else None


def parse_reply(reply: str, choices: list[str], style: str) -> int | None:
    """The choice index a reply picks under ``style``, or None when it picks none."""
    if check_style(style) == "original":
        return choice_named_first(reply.split(DISH_NAME_LINK.lstrip("，"))[0], choices)
    letter = _LETTER.search(reply)
    return OPTION_LETTERS.index(letter.group(1)) if letter else choice_named_first(reply, choices)


def is_correct(reply: str, item: dict) -> bool:
    """Whether a reply answers a converted test item (see ``test.json``) correctly."""
    return parse_reply(reply, item["choices"], item["style"]) == item["answer_index"]
