"""Exercises that check themselves: ``check("03.1", answer, ...)`` says whether an answer is right, and how to
get there when it is not.

Each lesson's checks live beside this file in ``lessonNN.py``. A check recomputes the right answer from what the
learner passes in (the records, the model, ...) with the course's own code, so it holds on the synthetic data and on
the real FoodieQA alike, and returns a hint (a string) for a wrong answer, ``None`` for a right one.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

CHECKS: dict[str, Callable[..., str | None]] = {}


def exercise(name: str):
    """Register the decorated function as the check of exercise ``name`` ("LL.N": lesson, then exercise number)."""

    def register(function: Callable[..., str | None]) -> Callable[..., str | None]:
        CHECKS[name] = function
        return function

    return register


def find_check(name: str) -> Callable[..., str | None]:
    if name in CHECKS:
        return CHECKS[name]
    lesson = name.split(".")[0]
    try:
        importlib.import_module(f"{__name__}.lesson{lesson}")
    except ModuleNotFoundError as error:
        raise KeyError(f"no exercises for lesson {lesson!r} (a name looks like '03.1')") from error
    if name not in CHECKS:
        known = ", ".join(sorted(key for key in CHECKS if key.startswith(f"{lesson}.")))
        raise KeyError(f"no exercise {name!r}; lesson {lesson} has {known}")
    return CHECKS[name]


def check(name: str, answer: Any, **context: Any) -> bool:
    """Print whether ``answer`` solves exercise ``name`` (with a hint when it does not) and return True if it does."""
    hint = find_check(name)(answer, **context)
    print(f"✓ Exercise {name}: right." if hint is None else f"✗ Exercise {name}: not yet. {hint}")
    return hint is None
