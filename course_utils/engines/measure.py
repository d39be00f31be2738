"""Measuring engines on the same requests: FoodieQA dish questions, requests and output tokens per second, one at
a time against batched, next to the GPU figures recorded by ``benchmarks/`` (shown as recorded, not measured)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..paths import project_root
from .interface import GenerationSettings

GPU_RESULTS_FILE = Path("benchmarks") / "results" / "generation_throughput.json"
# LMDeploy's pipeline as it comes, and as load_engine builds it (the benchmark's names for those knobs).
RECORDED_LMDEPLOY_KNOBS = {
    "defaults": "LMDeploy pipeline, its defaults",
    "lesson 02's knobs, special-token ids cached": "LMDeploy set up as load_engine does, lesson 02's knobs",
}


def dish_requests(data_root=None, count: int = 8, style: str = "mcq") -> list[tuple[Path, str]]:
    """``count`` (dish photo, question) pairs from FoodieQA's valid records (the synthetic one by default)."""
    from ..foodieqa import format_question, resolve_data_root, validate_foodieqa
    from ..foodieqa.layout import image_path

    root = resolve_data_root(data_root)
    records = validate_foodieqa(root).valid_records
    if not records:
        raise ValueError(f"{root} holds no valid FoodieQA question: lesson 03 shows what is wrong with it")
    picked = [records[i % len(records)] for i in range(count)]  # repeats only when the data is smaller
    return [(image_path(root, record), format_question(record, style)) for record in picked]


def measure_throughput(engine, requests, settings: GenerationSettings, label: str, batched: bool = True) -> dict:
    """Requests and output tokens per second for ``requests``, after one warm-up request: all of them as one
    ``answer_batch`` call, or one ``answer`` call after another (``batched=False``)."""
    engine.answer(*requests[0], settings)  # warm-up: first calls pay for lazy initialisation
    start = time.perf_counter()
    if batched:
        answers = engine.answer_batch(requests, settings)
    else:
        answers = [engine.answer(image, question, settings) for image, question in requests]
    seconds = time.perf_counter() - start
    tokens = sum(answer.output_tokens for answer in answers)
    return {"label": label, "backend": engine.backend, "requests": len(requests), "seconds": round(seconds, 6),
            "requests_per_s": len(requests) / seconds, "output_tokens_per_s": tokens / seconds,
            "output_tokens": tokens}


def read_recorded_throughput(path: str | Path | None = None) -> tuple[list[dict], str]:
    """The committed GPU benchmark's one-tile figures (``benchmarks/generation_throughput.py``: 32 dish-photo
    requests, 64 new tokens, InternVL2-2B shapes) as rows ``{label, requests_per_s}``: the official code's recorded
    ``chat`` and ``batch_chat``, the course code's, the transformers engine, and LMDeploy as it comes and as
    ``load_engine`` builds it with this lesson's knobs, each from its latest run; and a line saying where they come
    from (or that the file does not exist yet: then no rows)."""
    path = Path(path) if path else project_root() / GPU_RESULTS_FILE
    if not path.is_file():
        return [], f"no recorded GPU figures: {path} does not exist (benchmarks/README.md says how to make it)"
    data = json.loads(path.read_text(encoding="utf-8"))
    setup = data.get("setup", {})
    official = setup.get("official_code_recorded", {})
    figures = {label: official[key] for key, label in (("chat", "official code: chat(), one at a time"),
                                                       ("batch_chat", "official code: batch_chat of 32"))
               if key in official}
    for result in sorted(data.get("results", []), key=lambda result: result.get("run", 1)):
        if result.get("request_set") == "one_tile" and "requests_per_s" in result:
            label = _recorded_label(result)
            if label:
                figures[label] = result["requests_per_s"]  # a later run replaces an earlier one
    rows = [{"label": label, "requests_per_s": float(value)} for label, value in figures.items()]
    return rows, f"recorded on {setup.get('device', 'a GPU')} by benchmarks/ ({path.name}), not measured here"


def _recorded_label(result: dict) -> str | None:
    """The chart label of one benchmark row, or None for rows the lesson leaves to the benchmark's README."""
    row, batch = result.get("row"), result.get("batch_size")
    if row == "lmdeploy" and result.get("knobs") in RECORDED_LMDEPLOY_KNOBS:
        return f"{RECORDED_LMDEPLOY_KNOBS[result['knobs']]}: batch of {batch}"
    if result.get("code") == "after" and result.get("attention") == "sdpa":
        if row == "chat":
            return "course code: chat(), one at a time"
        if row == "batch_chat" and batch == 32:
            return "course code: batch_chat of 32"
    if row == "engine" and batch == 32:
        return "transformers engine: answer_batch of 32"
    return None


def plot_throughput(measured: list[dict], recorded: list[dict], recorded_note: str, title_here: str):
    """Bar charts of requests/s: what this notebook measured, and beside it the recorded GPU figures (a
    ``matplotlib.figure.Figure`` made without pyplot: a notebook shows it once, as the cell's value)."""
    from matplotlib.figure import Figure

    panels = [(measured, title_here, "tab:blue", None)]
    if recorded:
        panels.append((recorded, recorded_note, "tab:gray", "//"))
    figure = Figure(figsize=(6.5 * len(panels), 1.8 + 0.45 * max(len(measured), len(recorded))))
    for axis, (rows, title, colour, hatch) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        values = [row["requests_per_s"] for row in rows]
        axis.barh([row["label"] for row in rows], values, color=colour, hatch=hatch)
        axis.invert_yaxis()
        axis.margins(x=0.15)  # room for the value labels
        axis.set_xlabel("requests per second")
        axis.set_title(title, fontsize=10, wrap=True)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:.3g}", va="center", fontsize=9)
    figure.tight_layout()
    return figure
