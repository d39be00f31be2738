"""What is in a FoodieQA folder: counts as plain data, and two figures for the notebook.

:func:`foodieqa_statistics` returns plain dicts (testable, printable); :func:`plot_statistics` and
:func:`plot_sample_grid` draw them and return a ``matplotlib.figure.Figure`` (not a pyplot figure, so a notebook
shows it exactly once).
"""

from __future__ import annotations

import random
import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import answer_index, image_path
from .prompts import OPTION_LETTERS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RIGHT_ANSWER_MARK = "✓"


def _by_count(counter: Counter) -> dict[str, int]:
    return {str(name): count for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def foodieqa_statistics(records: list[dict]) -> dict:
    """Counts over valid records: questions, dishes, images, questions per type and cuisine, right-answer letters."""
    letters = Counter(OPTION_LETTERS[answer_index(r)] for r in records)
    return {
        "questions": len(records),
        "dishes": len({r["food_meta"]["id"] for r in records}),
        "images": len({r["food_meta"]["food_file"] for r in records}),
        "by_question_type": _by_count(Counter(r["question_type"] for r in records)),
        "by_cuisine": _by_count(Counter(r["food_meta"]["food_type"] for r in records)),
        "answer_positions": {letter: letters[letter] for letter in OPTION_LETTERS},
    }


def plot_statistics(stats: dict) -> Figure:
    """Three bar charts: questions per type, per cuisine, and how often each letter is the right answer."""
    from matplotlib.figure import Figure

    from ..fonts import use_cjk_font

    use_cjk_font()
    panels = [("questions per type", stats["by_question_type"]), ("questions per cuisine", stats["by_cuisine"]),
              ("right answer position", stats["answer_positions"])]
    figure = Figure(figsize=(14, 4), layout="constrained")
    for axes, (title, counts) in zip(figure.subplots(1, 3), panels):
        names = list(counts)[::-1]  # largest at the top
        axes.barh(names, [counts[n] for n in names], color="#4c72b0")
        axes.set_title(title)
        axes.set_xlabel("questions")
    figure.suptitle(f"{stats['questions']} questions, {stats['dishes']} dishes, {stats['images']} images")
    return figure


def pick_samples(records: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` questions on distinct images, taken from each cuisine in turn (seeded)."""
    rng = random.Random(seed)
    by_cuisine: dict[str, list[dict]] = {}
    seen_images = set()
    for record in rng.sample(records, len(records)):
        if record["food_meta"]["food_file"] not in seen_images:
            seen_images.add(record["food_meta"]["food_file"])
            by_cuisine.setdefault(str(record["food_meta"]["food_type"]), []).append(record)
    queues = [by_cuisine[name] for name in sorted(by_cuisine)]
    picked: list[dict] = []
    while len(picked) < count and any(queues):
        picked += [queue.pop() for queue in queues if queue][: count - len(picked)]
    return picked


def describe_question(record: dict, width: int = 18) -> str:
    """The question, wrapped, and its options; the right one is marked with a tick."""
    right = answer_index(record)
    options = [f"{letter}. {choice}" + (f" {RIGHT_ANSWER_MARK}" if i == right else "")
               for i, (letter, choice) in enumerate(zip(OPTION_LETTERS, record["choices"]))]
    return "\n".join([textwrap.fill(record["question"], width), *options])


def plot_sample_grid(records: list[dict], root: str | Path, count: int = 8, columns: int = 4, seed: int = 0) -> Figure:
    """A grid of sample images, each with its question, options and the right answer ticked."""
    from matplotlib.figure import Figure
    from PIL import Image

    from ..fonts import use_cjk_font

    use_cjk_font()
    samples = pick_samples(records, count, seed)
    rows = max(1, -(-len(samples) // columns))
    figure = Figure(figsize=(3.4 * columns, 5.2 * rows), layout="constrained")
    for axes, record in zip(figure.subplots(rows, columns, squeeze=False).flat, samples + [None] * (rows * columns)):
        axes.axis("off")
        if record is None:
            continue
        with Image.open(image_path(root, record)) as image:
            axes.imshow(image.convert("RGB"))
        axes.set_title(f"{record['food_meta']['food_name']} · {record['food_meta']['food_type']}", fontsize=10)
        axes.text(0, -0.04, describe_question(record), transform=axes.transAxes, va="top", fontsize=9, linespacing=1.5)
    return figure
