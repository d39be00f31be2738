"""Convert validated FoodieQA questions to XTuner's InternVL format, with a test split held out by dish.

FoodieQA defines no training split, and a model judged on dishes it trained on learns nothing we can measure,
so whole dishes go to one side: questions linked by the same ``food_meta.id``, the same image or the same dish
name never straddle the split. Output (default ``run_dir()/data/foodieqa-xtuner``):

* ``train.json`` - what ``xtuner.dataset.InternVL_V1_5_Dataset`` reads; image paths relative to the manifest's
  ``image_folder``;
* ``test.json`` - the held-out questions with everything an evaluation needs (prompt, choices, answer index);
* ``validation_report.json`` - every skipped record with its reasons;
* ``manifest.json`` - counts, seed, style, source hash: what lesson 04 reads.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..outputs import check_output, staged_output
from ..paths import prepared_dir
from .layout import SIVQA_FILE, FoodieQAFormatError, answer_index, find_foodieqa_root, sha256_of
from .prompts import DEFAULT_STYLE, build_target, check_style, format_question
from .validate import ValidationReport, validate_foodieqa

TRAIN_FILE = "train.json"
TEST_FILE = "test.json"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "validation_report.json"
IMAGE_TAG = "<image>"
PREPARED_KIND = "prepared-foodieqa"  # the outputs marker's kind


def dish_groups(records: list[dict]) -> list[list[dict]]:
    """Records grouped by dish: linked by a shared ``food_meta.id``, image file or dish name (union-find)."""
    parent: dict[tuple, tuple] = {}

    def find(key: tuple) -> tuple:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def keys(record: dict) -> list[tuple]:
        meta = record["food_meta"]
        return [("id", meta["id"]), ("image", meta["food_file"]), ("name", meta["food_name"])]

    for record in records:
        first, *others = keys(record)
        for key in others:
            parent[find(key)] = find(first)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        groups[find(keys(record)[0])].append(record)
    return list(groups.values())


def check_test_fraction(test_fraction: float) -> float:
    """``test_fraction`` if it is a share strictly between 0 and 1; ValueError otherwise."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (e.g. 0.25), got {test_fraction}")
    return test_fraction


def split_by_dish(records: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) records; about ``test_fraction`` of the dishes, spread evenly over cuisines, are held out."""
    check_test_fraction(test_fraction)
    groups = dish_groups(records)
    if len(groups) < 2:
        raise ValueError(f"a held-out split needs at least 2 dishes, found {len(groups)}")
    rng = random.Random(seed)
    by_cuisine: dict[str, list[list[dict]]] = defaultdict(list)
    for group in groups:
        by_cuisine[str(group[0]["food_meta"]["food_type"])].append(group)
    ordered = []  # dishes listed cuisine by cuisine, shuffled within each
    for cuisine in sorted(by_cuisine):
        rng.shuffle(by_cuisine[cuisine])
        ordered += by_cuisine[cuisine]
    test_count = min(len(ordered) - 1, max(1, round(test_fraction * len(ordered))))
    offset = rng.random()  # evenly spaced picks over the cuisine-ordered list: a stratified sample
    test_positions = {math.floor((k + offset) * len(ordered) / test_count) for k in range(test_count)}
    held_out = {id(r) for i, group in enumerate(ordered) if i in test_positions for r in group}
    return [r for r in records if id(r) not in held_out], [r for r in records if id(r) in held_out]  # source order


def check_enough_valid_dishes(report: ValidationReport) -> None:
    """ValueError saying how many records were skipped and why, when too few dishes are left for a split."""
    dishes = len(dish_groups(report.valid_records))
    if dishes >= 2 or not report.skipped:
        return
    kind, count = max(report.problem_counts().items(), key=lambda item: item[1])
    example = next(bad for bad in report.bad_records if kind in {problem.kind for problem in bad.problems})
    raise ValueError(f"{report.skipped} of {report.total} records in {report.root} were skipped, leaving "
                     f"{dishes} dish(es): a held-out split needs at least 2. The commonest reason ({count} records): "
                     f"{kind}, e.g. {example.describe()}")


def to_xtuner_sample(record: dict, style: str, image_wh: tuple[int, int]) -> dict:
    """One training sample in XTuner's InternVL format (``image_wh`` lets XTuner count image tokens exactly)."""
    return {
        "id": record["question_id"],
        "image": record["food_meta"]["food_file"],
        "image_wh": list(image_wh),
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TAG}\n{format_question(record, style)}"},
            {"from": "gpt", "value": build_target(record, style)},
        ],
    }


def to_test_item(record: dict, style: str, image_wh: tuple[int, int]) -> dict:
    """A held-out question: the XTuner sample plus what scoring needs (see :func:`prompts.is_correct`)."""
    meta = record["food_meta"]
    return {
        **to_xtuner_sample(record, style, image_wh),
        "question_id": record["question_id"],
        "style": style,
        "prompt": format_question(record, style),
        "target": build_target(record, style),
        "question": record["question"],
        "choices": record["choices"],
        "answer_index": answer_index(record),
        "question_type": record["question_type"],
        "question_en": record.get("question_en"),
        "choices_en": record.get("choices_en"),
        "food_id": meta["id"],
        "food_name": meta["food_name"],
        "food_type": meta["food_type"],
    }


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


@dataclass
class PreparedFoodieQA:
    out_dir: Path
    manifest: dict
    report: ValidationReport
    train: list[dict]  # XTuner samples
    test: list[dict]  # held-out items

    def summary(self) -> str:
        c = self.manifest["counts"]
        return (
            f"{c['valid']} valid questions ({c['skipped']} skipped) -> "
            f"train {c['train_questions']} questions / {c['train_dishes']} dishes / {c['train_images']} images, "
            f"test {c['test_questions']} questions / {c['test_dishes']} dishes / {c['test_images']} images "
            f"(style {self.manifest['style']}, seed {self.manifest['seed']}) in {self.out_dir}"
        )


def prepare_foodieqa(
    src: str | Path,
    out: str | Path | None = None,
    style: str = DEFAULT_STYLE,
    test_fraction: float = 0.25,
    seed: int = 0,
    report: ValidationReport | None = None,
    force: bool = False,
) -> PreparedFoodieQA:
    """Validate ``src`` (or reuse its ``report``), split it by dish, and write train/test/report/manifest to ``out``.

    Every argument is checked before the images are: a wrong style, share or output folder costs nothing. The
    output appears only when complete (see :mod:`course_utils.outputs`) and never inside ``src``.
    """
    check_style(style)
    check_test_fraction(test_fraction)
    src = Path(src).expanduser().resolve()
    if report is not None and report.root != src:
        raise ValueError(f"the validation report is of {report.root}, not of {src}")
    if find_foodieqa_root(src) != src:
        raise FoodieQAFormatError(f"{src} holds no {SIVQA_FILE}: point it at an unzipped FoodieQA folder")
    out = check_output(out if out is not None else prepared_dir(), PREPARED_KIND, force=force, protected=[src])
    report = report or validate_foodieqa(src)
    check_enough_valid_dishes(report)
    train_records, test_records = split_by_dish(report.valid_records, test_fraction, seed)
    size = report.image_sizes
    train = [to_xtuner_sample(r, style, size[r["food_meta"]["food_file"]]) for r in train_records]
    test = [to_test_item(r, style, size[r["food_meta"]["food_file"]]) for r in test_records]

    def dish_ids(records):
        return sorted({r["food_meta"]["id"] for r in records}, key=str)

    def images(records):
        return len({r["food_meta"]["food_file"] for r in records})

    manifest = {
        "format": "xtuner InternVL_V1_5_Dataset json",
        "train_file": TRAIN_FILE,
        "test_file": TEST_FILE,
        "validation_report": REPORT_FILE,
        "image_folder": str(src),
        "style": style,
        "seed": seed,
        "test_fraction": test_fraction,
        "source": {"root": str(src), "sivqa_sha256": sha256_of(src / SIVQA_FILE)},
        "counts": {
            "records": report.total,
            "valid": len(report.valid_records),
            "skipped": report.skipped,
            "train_questions": len(train),
            "test_questions": len(test),
            "train_dishes": len(dish_ids(train_records)),
            "test_dishes": len(dish_ids(test_records)),
            "train_images": images(train_records),
            "test_images": images(test_records),
        },
        "train_dish_ids": dish_ids(train_records),
        "test_dish_ids": dish_ids(test_records),
    }
    with staged_output(out, PREPARED_KIND, force=force, protected=[src]) as staging:
        _write_json(staging / TRAIN_FILE, train)
        _write_json(staging / TEST_FILE, test)
        _write_json(staging / REPORT_FILE, report.to_dict())
        _write_json(staging / MANIFEST_FILE, manifest)
    return PreparedFoodieQA(out, manifest, report, train, test)


def load_manifest(out: str | Path | None = None) -> dict:
    """The manifest of converted data, with ``train_path``/``test_path`` resolved; FileNotFoundError naming the fix."""
    out = Path(out) if out is not None else prepared_dir()
    path = out / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no converted FoodieQA at {out}: run lesson 03 or `python -m course_utils prepare-foodieqa SRC {out}`"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["train_path"] = str(out.resolve() / manifest["train_file"])
    manifest["test_path"] = str(out.resolve() / manifest["test_file"])
    return manifest
