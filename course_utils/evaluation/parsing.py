"""Which option a model's free-text reply picks, or that it picks none.

A reply is read the way a careful human grader reads it, most explicit evidence first:

1. a stated letter: ``答案是B``, ``答案：B``, ``The answer is (B)``, ``选B``, ``B选项``, ``(B)``, ``（B)``, ``（B）``;
2. a letter that opens the reply on its own: ``B``, ``B.``, ``B) 川菜``, ``B、川菜`` (but not the English article
   in ``A dish from Sichuan``);
3. an option's text, when the reply names exactly one option (a reply repeating the option list picks none); in
   the ``original`` style only the part before ``图中的菜是``, because the dish name may contain an option's words.

In the ``original`` style (no letters in the prompt) the option text is tried first. A reply that picks nothing
is *unparsed*: it is counted apart from a wrong answer, because "the model said something else" and "the model
chose the wrong dish" are different failures.
"""

from __future__ import annotations

import re

from ..foodieqa.prompts import DISH_NAME_LINK, OPTION_LETTERS

# (?<![A-Za-z]) / (?![A-Za-z]) keep letters inside words ("BEEF", "Cantonese") from counting as options.
_ANSWER_PHRASE = re.compile(
    r"(?:答案|选项|(?i:answer|option|choice))\s*(?:是|为|应该是|应为|(?i:is|would be))?\s*[:：]?\s*[（(【\[]?\s*([A-D])(?![A-Za-z])"
    r"|选择?\s*[（(【\[]?\s*([A-D])(?![A-Za-z])"
    r"|(?<![A-Za-z])([A-D])\s*(?:选项|项)"
)
_BRACKETED_LETTER = re.compile(r"[（(【\[]\s*([A-D])\s*[)）】\]]")
# a lone letter at the start: followed by the end, punctuation, or a non-Latin character (not "A dish")
_OPENING_LETTER = re.compile(r"^\s*[（(【\[]?\s*([A-D])\s*(?:$|[)）】\].．、:：,，。;；]|(?=[^\sA-Za-z]))")


def stated_letter(reply: str) -> int | None:
    """The option index of a letter the reply states (see the module docstring), or None.

    Brackets count only when they name one letter: a reply that repeats the option list states no answer.
    """
    phrase = _ANSWER_PHRASE.search(reply)
    if phrase:
        letter = next(group for group in phrase.groups() if group)
    else:
        bracketed = {letter.upper() for letter in _BRACKETED_LETTER.findall(reply)}
        opening = _OPENING_LETTER.search(reply)
        if len(bracketed) == 1:
            letter = bracketed.pop()
        elif opening and not bracketed:
            letter = opening.group(1)
        else:
            return None
    return OPTION_LETTERS.index(letter.upper())


def named_choice(reply: str, choices: list[str]) -> int | None:
    """The one option whose text the reply names (case-insensitive), or None when it names none or several.

    An option found only inside a longer named option does not count (``鸡`` inside ``鸡肉``); a reply naming
    several options (e.g. repeating the option list) picks none.
    """
    text = reply.casefold()
    found = [(match.start(), match.end(), index)  # every occurrence of every option's text
             for index, choice in enumerate(choices) if choice.strip()
             for match in re.finditer(re.escape(choice.strip().casefold()), text)]
    named = {index for start, end, index in found
             if not any(s <= start and end <= e and e - s > end - start for s, e, _ in found)}
    return named.pop() if len(named) == 1 else None


def parse_answer(reply: str, choices: list[str], style: str = "mcq") -> int | None:
    """The option index (0-3) a reply picks, or None when it picks none (see the module docstring).

    ``style`` is ``mcq`` (options shown with letters: the letter is the stronger evidence) or ``original``
    (no letters shown: the option text is read first, in the part of the reply before ``图中的菜是``).
    """
    if style == "original":
        answer_part = reply.split(DISH_NAME_LINK.lstrip("，"))[0]
        found = named_choice(answer_part, choices)
        return found if found is not None else stated_letter(answer_part)
    if style != "mcq":
        raise ValueError(f"unknown answer style {style!r}; choose 'mcq' or 'original'")
    found = stated_letter(reply)
    return found if found is not None else named_choice(reply, choices)
