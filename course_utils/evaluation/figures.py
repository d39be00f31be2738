"""Pictures of an evaluation: accuracy bars with their intervals, per cuisine, beside the paper, and a gallery.

Each function returns a ``matplotlib.figure.Figure`` (not a pyplot figure, so a notebook shows it once) and draws
chance (25 %) as a dashed line wherever accuracies are drawn.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

from ..foodieqa.stats import describe_question
from .published import CHANCE_ACCURACY, PUBLISHED_SIVQA_ACCURACY

FONT_SIZE = 8.5
LINE_SPACING = 1.5
COLOURS = {"before": "#9a9a9a", "after": "#4c72b0", "paper": "#dd8452", "right": "#2a9d55", "wrong": "#c0392b"}


def _bars_with_intervals(axes, positions, summaries: list[dict], colour: str, label: str, width: float) -> None:
    """Bars of accuracy (percent) with their Wilson interval as error bars."""
    heights = [100 * s["accuracy"] for s in summaries]
    low = [100 * (s["accuracy"] - s["ci95"][0]) for s in summaries]
    high = [100 * (s["ci95"][1] - s["accuracy"]) for s in summaries]
    axes.bar(positions, heights, width, yerr=[low, high], capsize=3, color=colour, label=label)


def _chance_line(axes, vertical: bool = False) -> None:
    draw = axes.axvline if vertical else axes.axhline
    draw(100 * CHANCE_ACCURACY, color="black", linestyle="--", linewidth=1, label="chance (25 %)")


def plot_before_after(comparisons: dict[str, dict], title: str = "held-out dishes"):
    """Accuracy before and after fine-tuning, one pair of bars per question set (e.g. per prompt style)."""
    from matplotlib.figure import Figure

    from ..fonts import use_cjk_font

    use_cjk_font()
    names = list(comparisons)
    figure = Figure(figsize=(2.2 + 1.8 * len(names), 4), layout="constrained")
    axes = figure.subplots()
    positions = range(len(names))
    _bars_with_intervals(axes, [p - 0.2 for p in positions], [comparisons[n]["before"] for n in names],
                         COLOURS["before"], "before (base model)", 0.4)
    _bars_with_intervals(axes, [p + 0.2 for p in positions], [comparisons[n]["after"] for n in names],
                         COLOURS["after"], "after (fine-tuned)", 0.4)
    _chance_line(axes)
    axes.set_xticks(list(positions), [f"{n}\n(n={comparisons[n]['before']['questions']})" for n in names])
    axes.set_ylim(0, 105)
    axes.set_ylabel("accuracy, % (bars: 95 % Wilson interval)")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    return figure


def plot_by_group(before: dict[str, dict], after: dict[str, dict], title: str, chance: bool = True):
    """Accuracy per group (cuisine or question type) before and after, horizontal bars with intervals; ``chance``
    False leaves out the chance line (for open questions, which have no options to guess among)."""
    from matplotlib.figure import Figure

    from ..fonts import use_cjk_font

    use_cjk_font()
    names = sorted(before)[::-1]  # alphabetical from the top
    figure = Figure(figsize=(7, 1.2 + 0.45 * len(names)), layout="constrained")
    axes = figure.subplots()
    for offset, summaries, key, label in ((0.2, before, "before", "before"), (-0.2, after, "after", "after")):
        values = [summaries[n] for n in names]
        accuracies = [100 * v["accuracy"] for v in values]
        errors = [[100 * (v["accuracy"] - v["ci95"][0]) for v in values],
                  [100 * (v["ci95"][1] - v["accuracy"]) for v in values]]
        axes.barh([i + offset for i in range(len(names))], accuracies, 0.4, xerr=errors, capsize=2,
                  color=COLOURS[key], label=label)
    if chance:
        _chance_line(axes, vertical=True)
    axes.set_yticks(range(len(names)), [f"{n} (n={before[n]['questions']})" for n in names])
    axes.set_xlim(0, 105)
    axes.set_xlabel("accuracy, % (bars: 95 % Wilson interval)")
    axes.set_title(title)
    figure.legend(loc="outside lower center", ncol=3, fontsize=8)  # below the axes: never over a bar
    return figure


def plot_published(course_rows: dict[str, tuple[float | None, float | None]] | None = None):
    """The paper's single-image accuracies (ZH and EN) with the course's own rows (percent) and chance marked."""
    from matplotlib.figure import Figure

    rows = {**PUBLISHED_SIVQA_ACCURACY, **(course_rows or {})}
    names = list(rows)[::-1]
    figure = Figure(figsize=(8, 1.2 + 0.4 * len(names)), layout="constrained")
    axes = figure.subplots()
    for offset, column, label, alpha in ((0.2, 0, "Chinese prompt", 1.0), (-0.2, 1, "English prompt", 0.55)):
        values = [rows[n][column] for n in names]
        colours = [COLOURS["after"] if n in (course_rows or {}) else COLOURS["paper"] for n in names]
        axes.barh([i + offset for i, v in enumerate(values) if v is not None], [v for v in values if v is not None],
                  0.4, color=[c for c, v in zip(colours, values) if v is not None], alpha=alpha, label=label)
    _chance_line(axes, vertical=True)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlim(0, 100)
    axes.set_xlabel("single-image VQA accuracy, %  (orange: FoodieQA paper; blue: this course)")
    axes.legend(loc="lower right", fontsize=8)
    return figure


def _answer_line(who: str, item: dict, width: int) -> str:
    mark = {"correct": "✓", "wrong": "×", "unparsed": "?"}[item["outcome"]]
    reply = " ".join(item["reply"].replace("\ufffd", "?").split()) or "(empty)"  # \ufffd: a broken byte sequence
    line, used = f"{mark} {who}: ", 0
    for char in reply:  # cut by display width (a Chinese character is two columns wide), not at spaces
        used += 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if used > width - len(line) - 1:
            return line + "…"
        line += char
    return line


def pick_gallery(table_rows: list[dict], count: int) -> list[str]:
    """Question ids for a gallery, taken from each kind of change in turn (fixed, broken, still wrong, still right),
    so that it shows what fine-tuning broke as well as what it fixed; different dishes first within each kind."""
    queues = []
    for change in ("fixed", "broken", "still wrong", "still right"):
        occurrence: Counter = Counter()
        ranked = []  # (how many questions of this dish came before, id): a dish's first question ranks 0
        for row in table_rows:
            if row["change"] == change:
                ranked.append((occurrence[row["food_name"]], row["question_id"]))
                occurrence[row["food_name"]] += 1
        queues.append([question_id for _, question_id in sorted(ranked, key=lambda pair: pair[0])])
    picked: list[str] = []
    while len(picked) < count and any(queues):
        picked += [queue.pop(0) for queue in queues if queue][: count - len(picked)]
    return picked


def plot_gallery(before: list[dict], after: list[dict], question_ids: list[str], columns: int = 4, width: int = 50):
    """Side by side for each question: the picture, the question and options, the base and fine-tuned replies.

    ``width``: the text's width in columns (a Chinese character takes two).
    """
    from matplotlib.figure import Figure
    from matplotlib.transforms import offset_copy
    from PIL import Image

    from ..fonts import use_cjk_font

    use_cjk_font()
    before_by_id = {item["question_id"]: item for item in before}
    after_by_id = {item["question_id"]: item for item in after}
    rows = max(1, -(-len(question_ids) // columns))
    figure = Figure(figsize=(3.6 * columns, 5.6 * rows), layout="constrained")
    for axes, question_id in zip(figure.subplots(rows, columns, squeeze=False).flat,
                                 question_ids + [None] * (rows * columns)):
        axes.axis("off")
        if question_id is None:
            continue
        b, a = before_by_id[question_id], after_by_id[question_id]
        with Image.open(b["image"]) as image:
            axes.imshow(image.convert("RGB"))
        axes.set_title(f"{b['food_name']} · {b['food_type']}", fontsize=10)
        record = {"question": b["prompt"].split("\n")[0], "choices": b["choices"], "answer": str(b["answer_index"])}
        described = describe_question(record, width // 2)
        axes.text(0, -0.04, described, transform=axes.transAxes, va="top", fontsize=FONT_SIZE,
                  linespacing=LINE_SPACING)
        below = described.count("\n") + 1
        for who, item in (("base", b), ("tuned", a)):  # each reply in the colour of its outcome
            shift = offset_copy(axes.transAxes, fig=figure, y=-below * FONT_SIZE * LINE_SPACING, units="points")
            axes.text(0, -0.04, _answer_line(who, item, width), transform=shift, va="top", fontsize=FONT_SIZE,
                      color=COLOURS["right" if item["outcome"] == "correct" else "wrong"])
            below += 1
    return figure
