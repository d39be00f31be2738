"""Ask a model the questions, score its replies, and compare two models on the same questions.

Models are reached only through the course's engines (:func:`course_utils.engines.load_engine`): LMDeploy on a
GPU, transformers otherwise, batched, greedy. Everything else here works on plain lists of dicts, so each step is
testable without a model:

* :func:`score_replies` - each question with its reply, the option picked and an ``outcome``: ``correct``,
  ``wrong`` or ``unparsed`` (the reply picks no option: counted apart from wrong answers);
* :func:`accuracy` / :func:`accuracy_by` - accuracy with its 95 % Wilson interval, overall or per cuisine / type;
* :func:`compare` - the paired before/after summary: fixed / broken / unchanged counts and McNemar's exact test;
* :func:`change_table` - one row per question: what each model replied and how the outcome changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from .parsing import parse_answer
from .statistics import mcnemar_exact, wilson_interval

OUTCOMES = ("correct", "wrong", "unparsed")
CHANGES = ("fixed", "broken", "still right", "still wrong")
# Reply length per answer style: a letter (with room for "答案是（B）"), or an option's text and the dish name.
REPLY_TOKENS = {"mcq": 16, "original": 40}


def greedy_settings(max_new_tokens: int = REPLY_TOKENS["original"]):
    """Greedy decoding (temperature 0): the same question always gets the same reply from the same model."""
    from ..engines import GenerationSettings

    return GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)


def ask(engine, questions: list[dict], settings=None, batch_size: int = 16, desc: str | None = None) -> list[str]:
    """The engine's reply to every question, asked ``batch_size`` at a time (a progress bar counts questions).

    Default settings: greedy, with room for the longest reply the questions' answer style needs.
    """
    from tqdm.auto import tqdm

    settings = settings or greedy_settings(max((REPLY_TOKENS[q["answer_style"]] for q in questions), default=1))
    replies: list[str] = []
    with tqdm(total=len(questions), desc=desc or "questions", unit="q") as progress:
        for start in range(0, len(questions), batch_size):
            batch = questions[start:start + batch_size]
            answers = engine.answer_batch([(q["image"], q["prompt"]) for q in batch], settings)
            replies += [answer.text for answer in answers]
            progress.update(len(batch))
    return replies


def score_replies(questions: list[dict], replies: list[str]) -> list[dict]:
    """Each question with ``reply``, ``picked`` (option index or None) and ``outcome`` (see the module docstring)."""
    if len(questions) != len(replies):
        raise ValueError(f"{len(replies)} replies for {len(questions)} questions")
    scored = []
    for question, reply in zip(questions, replies):
        picked = parse_answer(reply, question["choices"], question["answer_style"])
        outcome = "unparsed" if picked is None else "correct" if picked == question["answer_index"] else "wrong"
        scored.append({**question, "reply": reply, "picked": picked, "outcome": outcome})
    return scored


def accuracy(scored: list[dict]) -> dict:
    """Counts of each outcome, the accuracy and its 95 % Wilson interval (``ci95``: [low, high])."""
    counts = Counter(item["outcome"] for item in scored)
    total = len(scored)
    correct = counts["correct"]
    return {"questions": total, **{outcome: counts[outcome] for outcome in OUTCOMES},
            "accuracy": correct / total if total else None,
            "ci95": list(wilson_interval(correct, total)) if total else None}


def accuracy_by(scored: list[dict], field: str) -> dict[str, dict]:
    """:func:`accuracy` per value of ``field`` (``food_type`` for cuisines, ``question_type``), sorted by name."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in scored:
        groups[str(item[field])].append(item)
    return {name: accuracy(groups[name]) for name in sorted(groups)}


def _paired(before: list[dict], after: list[dict]) -> list[tuple[dict, dict]]:
    after_by_id = {item["question_id"]: item for item in after}
    if len(after_by_id) != len(before) or any(item["question_id"] not in after_by_id for item in before):
        raise ValueError("a paired comparison needs both models' replies to the same questions")
    return [(item, after_by_id[item["question_id"]]) for item in before]


def change_of(before: dict, after: dict) -> str:
    right_before, right_after = before["outcome"] == "correct", after["outcome"] == "correct"
    if right_before != right_after:
        return "fixed" if right_after else "broken"
    return "still right" if right_after else "still wrong"


def change_table(before: list[dict], after: list[dict]) -> list[dict]:
    """One row per question: dish, cuisine, type, right option, both replies and outcomes, and the change."""
    return [
        {"question_id": b["question_id"], "food_name": b["food_name"], "food_type": b["food_type"],
         "question_type": b["question_type"], "right answer": b["choices"][b["answer_index"]],
         "reply before": b["reply"], "outcome before": b["outcome"],
         "reply after": a["reply"], "outcome after": a["outcome"], "change": change_of(b, a)}
        for b, a in _paired(before, after)
    ]


def compare(before: list[dict], after: list[dict]) -> dict:
    """The paired summary: both accuracies, the change counts, and McNemar's exact p-value on fixed vs broken."""
    changes = Counter(change_of(b, a) for b, a in _paired(before, after))
    return {"before": accuracy(before), "after": accuracy(after),
            "changes": {change: changes[change] for change in CHANGES},
            "mcnemar_p": mcnemar_exact(changes["fixed"], changes["broken"])}


def agreement(first: list[dict], second: list[dict]) -> dict:
    """How often two runs over the same questions (e.g. LMDeploy and transformers) give the same reply and pick."""
    pairs = _paired(first, second)
    return {"questions": len(pairs),
            "same_reply": sum(a["reply"].strip() == b["reply"].strip() for a, b in pairs),
            "same_pick": sum(a["picked"] == b["picked"] for a, b in pairs)}


LMDEPLOY_CACHE_SHARE = 0.2


def evaluation_engine(model_path: str | Path, backend: str = "auto", batch_size: int = 16, **engine_options):
    """The course's engine (:func:`course_utils.engines.load_engine`) for ``model_path``, set up for an evaluation.

    LMDeploy engines get a modest KV cache (``LMDEPLOY_CACHE_SHARE`` of free GPU memory) and ``batch_size`` as their
    batch limit unless ``engine_options`` say otherwise: with LMDeploy's default share (0.8) the cache left too little
    memory for its CUDA graphs on an 80 GB card (measured)."""
    from .. import engines

    if backend == "auto":
        backend, _ = engines.choose_backend()
    if backend != "transformers":
        engine_options = {"cache_max_entry_count": LMDEPLOY_CACHE_SHARE, "max_batch_size": batch_size,
                          **engine_options}
    return engines.load_engine(model_path, backend=backend, **engine_options)


def evaluate_model(model_path: str | Path, question_sets: dict[str, list[dict]], backend: str = "auto",
                   settings=None, batch_size: int = 16, **engine_options) -> tuple[dict[str, list[dict]], dict]:
    """Load ``model_path`` once (:func:`evaluation_engine`), answer every question set, free the model:
    ({set name: scored}, engine info)."""
    engine = evaluation_engine(model_path, backend, batch_size, **engine_options)
    try:
        scored = {name: score_replies(questions, ask(engine, questions, settings, batch_size,
                                                     desc=f"{Path(model_path).name} · {name}"))
                  for name, questions in question_sets.items()}
        return scored, {"model_path": str(engine.model_path), "backend": engine.backend}
    finally:
        engine.close()


def summarise(scored: list[dict]) -> dict:
    """Accuracy overall, per cuisine and per question type."""
    return {"overall": accuracy(scored), "by_cuisine": accuracy_by(scored, "food_type"),
            "by_question_type": accuracy_by(scored, "question_type")}


def before_after_report(before: list[dict], after: list[dict]) -> dict:
    """Everything the results file keeps about one question set: the paired comparison, both summaries, and
    every question with both replies."""
    return {"comparison": compare(before, after), "before": summarise(before), "after": summarise(after),
            "questions": change_table(before, after)}


def save_results(results: dict, path: str | Path) -> Path:
    """Write ``results`` as JSON to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(results, file, ensure_ascii=False, indent=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
