"""Lesson 05's exercises: unparsed replies, accuracy per dish, the questions an interval needs, the chance line.

Each check recomputes the truth from the scored replies the learner passes (``before["original"]``, ``paper``, ...)
with the course's own parser and statistics, so it holds for any model and data set.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ..evaluation import CHANCE_ACCURACY, parse_answer, wilson_interval
from . import exercise


def unparsed_count(scored: list[dict]) -> int:
    """Replies that pick no option, read again with ``parse_answer``."""
    return sum(parse_answer(item["reply"], item["choices"], item["answer_style"]) is None for item in scored)


@exercise("05.1")
def unparsed_replies(answer, before: list[dict], after: list[dict]) -> str | None:
    """``answer``: {"base": n, "fine-tuned": m}, how many replies of each model pick no option."""
    truth = {"base": unparsed_count(before), "fine-tuned": unparsed_count(after)}
    if not isinstance(answer, dict) or set(answer) != set(truth):
        return 'answer with a dict {"base": n, "fine-tuned": m}'
    if answer == truth:
        return None
    not_correct = {"base": sum(item["outcome"] != "correct" for item in before),
                   "fine-tuned": sum(item["outcome"] != "correct" for item in after)}
    if answer == not_correct:
        return ("that counts every reply that is not right; an unparsed reply picks no option at all "
                "(outcome 'unparsed', parse_answer gives None), a wrong one picks the wrong option")
    if answer == {"base": truth["fine-tuned"], "fine-tuned": truth["base"]}:
        return "the two counts are swapped: `before` holds the base model's replies, `after` the fine-tuned one's"
    return "count the replies whose outcome is 'unparsed' in before['original'] and in after['original']"


def accuracy_per_dish(scored: list[dict]) -> dict[str, float]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for item in scored:
        groups[item["food_name"]].append(item["outcome"] == "correct")
    return {name: sum(right) / len(right) for name, right in groups.items()}


@exercise("05.2")
def dish_accuracy(answer, after: list[dict]) -> str | None:
    """``answer``: {dish name: the fine-tuned model's accuracy on that dish's questions, a share in 0-1}."""
    truth = accuracy_per_dish(after)
    if not isinstance(answer, dict) or set(map(str, answer)) != set(truth):
        return f"key the dict by food_name, one entry per held-out dish ({len(truth)} dishes)"
    if all(math.isclose(answer[name], 100 * share) for name, share in truth.items()):
        return "write each accuracy as a share between 0 and 1, not a percentage"
    wrong = [name for name, share in truth.items() if not math.isclose(answer[name], share, abs_tol=1e-9)]
    if not wrong:
        return None
    return (f"{len(wrong)} dishes are off (e.g. {wrong[0]}): for each dish, divide the questions with outcome "
            "'correct' by all of that dish's questions (unparsed replies count as not right)")


def wilson_width(accuracy: float, total: int) -> float:
    low, high = wilson_interval(round(accuracy * total), total)
    return high - low


def questions_needed(accuracy: float = 0.6, width: float = 0.10) -> int:
    """The fewest questions for which the Wilson interval of ``accuracy`` is at most ``width`` wide."""
    return next(total for total in range(1, 100_000) if wilson_width(accuracy, total) <= width)


@exercise("05.3")
def interval_questions(answer) -> str | None:
    """``answer``: the fewest questions n for which ``wilson_interval(round(0.6 * n), n)`` is at most 10 points wide."""
    truth = questions_needed()
    if not isinstance(answer, int):
        return "answer with a whole number of questions"
    if answer == truth:
        return None
    z = 1.959963984540054
    if answer == math.ceil(z * z * 0.6 * 0.4 / 0.05 ** 2):
        return ("that is the textbook interval p ± 1.96·√(p(1-p)/n) solved for n; scan n upward with "
                "evaluation.wilson_interval(round(0.6 * n), n) instead")
    if answer > truth:
        return f"fewer questions already do: at {truth} the interval is {100 * wilson_width(0.6, truth):.2f} points wide"
    return (f"at {answer} questions the interval is still {100 * wilson_width(0.6, max(answer, 1)):.1f} points wide; "
            "go up until the width is at most 10 points")


def above_chance(scored: list[dict]) -> bool:
    """Whether the lower end of the accuracy's 95 % interval lies above the chance line."""
    correct = sum(item["outcome"] == "correct" for item in scored)
    return wilson_interval(correct, len(scored))[0] > CHANCE_ACCURACY


@exercise("05.4")
def paper_chance_line(answer, paper: dict[str, list[dict]]) -> str | None:
    """``answer``: {question set name ("paper_zh", "paper_en"): whether the model is above chance there}."""
    truth = {name: above_chance(scored) for name, scored in paper.items()}
    if not isinstance(answer, dict) or set(answer) != set(truth):
        return f"answer with a dict of True/False keyed like `paper`: {sorted(truth)}"
    if answer == truth:
        return None
    by_point = {name: sum(item["outcome"] == "correct" for item in scored) / len(scored) > CHANCE_ACCURACY
                for name, scored in paper.items()}
    if answer == by_point:
        return ("that compares the accuracy itself with chance; a few lucky guesses lift it above 25 %: compare the "
                "lower end of its 95 % interval (evaluation.wilson_interval) with CHANCE_ACCURACY")
    return ("for each language: count the correct replies, take evaluation.wilson_interval(correct, questions), "
            "and say True when its lower end lies above CHANCE_ACCURACY")
