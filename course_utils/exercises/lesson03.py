"""Checks of lesson 03's exercises: the split by dish, the one-letter baseline, a bad record, the label mask."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from . import exercise

SPLIT_KEYS = ("train_questions", "test_questions", "train_dishes", "test_dishes", "dishes_in_both")
LETTERS = "ABCD"


def dish_ids(records: list[dict]) -> set:
    return {record["food_meta"]["id"] for record in records}


def split_counts(records: list[dict], test_fraction: float, seed: int) -> dict[str, int]:
    """The figures exercise 03.1 asks for, of the course's split of ``records``."""
    from ..foodieqa import split_by_dish

    train, test = split_by_dish(records, test_fraction, seed)
    return {"train_questions": len(train), "test_questions": len(test), "train_dishes": len(dish_ids(train)),
            "test_dishes": len(dish_ids(test)), "dishes_in_both": len(dish_ids(train) & dish_ids(test))}


@exercise("03.1")
def larger_test_split(answer, records: list[dict], seed: int = 0, test_fraction: float = 0.4) -> str | None:
    if not isinstance(answer, dict) or set(answer) != set(SPLIT_KEYS):
        return f"answer with a dict of exactly these keys: {', '.join(SPLIT_KEYS)}"
    truth = split_counts(records, test_fraction, seed)
    if answer == truth:
        return None
    if answer["dishes_in_both"]:
        return "no dish lands on both sides: the split moves whole dishes (count shared food_meta.id values)"
    if answer["test_dishes"] != truth["test_dishes"]:
        return (f"{test_fraction:.0%} of the {len(dish_ids(records))} dishes should be held out: call "
                f"split_by_dish(records, {test_fraction}, seed) and count distinct food_meta.id values per side")
    wrong = [key for key in SPLIT_KEYS if answer[key] != truth[key]]
    return (f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} off: questions are the length of each side, "
            "dishes its distinct food_meta.id values")


@exercise("03.2")
def always_one_letter(answer, held_out: list[dict]) -> str | None:
    if not isinstance(answer, dict) or set(answer) != set(LETTERS):
        return "answer with a dict from each letter A, B, C, D to its share of right answers"
    truth = {letter: sum(item["answer_index"] == index for item in held_out) / len(held_out)
             for index, letter in enumerate(LETTERS)}
    if all(abs(answer[letter] - truth[letter]) < 5e-3 for letter in LETTERS):
        return None
    if any(answer[letter] > 1 for letter in LETTERS):
        return "give shares between 0 and 1 (right answers / held-out questions), not percentages or counts"
    if not any(answer.values()):
        return ("every letter scored 0: a lone letter names no option's text, so score the questions in the mcq "
                "style (each item's \"style\" set to \"mcq\", as in the setup cell)")
    return "a letter is right where it is the answer: count the held-out questions whose right option it names"


@exercise("03.3")
def broken_record_reasons(answer, scratch: str | Path, broken: dict) -> str | None:
    from ..foodieqa import FoodieQAFormatError, validate_foodieqa

    if not isinstance(answer, dict) or set(answer) != {"reasons", "skipped"}:
        return 'answer with {"reasons": {...}, "skipped": n}'
    try:
        report = validate_foodieqa(scratch)
    except FoodieQAFormatError:
        report = None
    flagged = [bad for bad in report.bad_records if bad.question_id == broken["question_id"]] if report else []
    if not flagged:
        return (f"{scratch} holds no record skipped under the broken record's id: add it to the copy's "
                "sivqa_tidy.json first, then validate the copy")
    reasons = {problem.kind for problem in flagged[-1].problems}
    if set(answer["reasons"]) != reasons:
        missed = reasons - set(answer["reasons"])
        if missed:
            return (f"the report gives {len(reasons)} reasons for the broken record, your answer misses "
                    f"{len(missed)}: the broken record is a copy of record 0, so look at every field it keeps")
        return "name the reasons exactly as the report's summary lists them for the broken record"
    if answer["skipped"] != report.skipped:
        return "skipped is how many records of the copy the report skips (report.skipped)"
    return None


def xtuner_trained_positions(sample: dict, model_path: str | Path, image_folder: str | Path) -> int:
    """How many positions of ``sample`` carry a label in the course's XTuner dataset (the config lesson 04 uses)."""
    from mmengine.config import Config

    from ..training.config import config_for, config_path
    from ..training.xtuner_patches import CourseInternVLDataset

    config = Config.fromfile(str(config_path(config_for(model_path))))
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "train.json"
        data.write_text(json.dumps([sample], ensure_ascii=False), encoding="utf-8")
        dataset = CourseInternVLDataset(model_path=str(model_path), template=config.prompt_template,
                                        data_paths=str(data), image_folders=str(image_folder),
                                        max_length=config.max_length)
        labels = dataset.prepare_data(0)["labels"]
    return sum(label != -100 for label in labels)


@exercise("03.4")
def trained_positions(answer, sample: dict, model_path: str | Path, image_folder: str | Path) -> str | None:
    truth = xtuner_trained_positions(sample, model_path, image_folder)
    if answer == truth:
        return None
    if answer == truth - 1:
        return "the answer's end, <|im_end|>, carries a label too: it teaches the model to stop"
    return "count the positions whose label is not -100 (the answer's tokens and the <|im_end|> after it)"
