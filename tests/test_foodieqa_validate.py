"""Validation on a hand-written malformed FoodieQA folder: every bad record is reported with its reason and skipped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from course_utils.foodieqa import FoodieQAFormatError, load_sivqa, prepare_foodieqa, validate_foodieqa


def jpeg_bytes(colour=(200, 40, 40), size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def record(question_id: str, image: str, dish_id: int, **changes) -> dict:
    """A well-formed sivqa record, then ``changes`` (a value of None deletes that key)."""
    base = {
        "question": "图片中的食物通常属于哪个菜系？",
        "choices": ["川菜", "粤菜", "鲁菜", "湘菜"],
        "answer": "0",
        "question_type": "cuisine_type",
        "food_name": f"菜{dish_id}",
        "question_id": question_id,
        "food_meta": {"main_ingredient": ["牛肉"], "id": dish_id, "food_name": f"菜{dish_id}",
                      "food_type": "川菜" if dish_id % 2 else "粤菜", "food_location": "餐馆", "food_file": image},
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key)
        else:
            base[key] = value
    return base


# (record or raw JSON value, the problem kind it must be reported under, a phrase of its reason); None: valid
CASES = [
    (record("vqa-0", "images/a.jpg", 1), None, None),
    (record("vqa-1", "images/b.jpg", 2), None, None),
    (record("vqa-2", "images/not-there.jpg", 3), "missing image", "image not found: images/not-there.jpg"),
    (record("vqa-3", "images/garbage.jpg", 4), "unreadable image", "images/garbage.jpg"),
    (record("vqa-4", "images/truncated.jpg", 5), "unreadable image", "images/truncated.jpg"),
    (record("vqa-5", "images/a.jpg", 1, answer="4"), "answer not in 0..3", "'4' not in 0..3"),
    (record("vqa-6", "images/a.jpg", 1, answer="B"), "answer not in 0..3", "answer 'B' is not an index in 0..3"),
    (record("vqa-7", "images/b.jpg", 2, choices=["川菜", "粤菜", "鲁菜"]), "wrong choice count", "3 choices, expected 4"),
    (record("vqa-8", "images/b.jpg", 2, choices=["川菜", "粤菜", "鲁菜", "湘菜", "徽菜"]), "wrong choice count", "5 choices"),
    (record("vqa-1", "images/c.jpg", 6), "duplicate question_id", "duplicate question_id 'vqa-1' (first at record 1)"),
    (record("vqa-10", "images/c.jpg", 6, question=None), "missing field", "missing field question"),
    (record("vqa-11", "images/c.jpg", 6, answer=None), "missing field", "missing field answer"),
    ({**record("vqa-12", "images/c.jpg", 6), "food_meta": {"id": 6, "food_name": "菜6", "food_type": "粤菜"}},
     "missing field", "missing field food_meta.food_file"),
    ({**record("vqa-12b", "images/c.jpg", 6), "food_meta": {**record("x", "images/c.jpg", 6)["food_meta"], "id": [6]}},
     "missing field", "missing field food_meta.id (a list)"),
    (record("vqa-13", "../outside.jpg", 7), "missing image", "leaves the data folder"),
    ("a string, not a record", "missing field", "record is a str"),
    (record("vqa-15", "images/c.jpg", 6), None, None),
    (record("vqa-16", "images/d.jpg", 8, answer=3), None, None),  # an int index is read as well
]


@pytest.fixture(scope="module")
def malformed_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("malformed") / "FoodieQA"
    (root / "images").mkdir(parents=True)
    for name, colour in (("a", (200, 40, 40)), ("b", (40, 40, 200)), ("c", (40, 160, 60)), ("d", (220, 170, 0))):
        (root / "images" / f"{name}.jpg").write_bytes(jpeg_bytes(colour))
    (root / "images" / "garbage.jpg").write_bytes(b"this is not an image")
    whole = jpeg_bytes((120, 120, 120), (256, 256))
    (root / "images" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root.parent / "outside.jpg").write_bytes(jpeg_bytes())  # exists, but outside the data folder
    (root / "sivqa_tidy.json").write_text(json.dumps([case[0] for case in CASES], ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def report(malformed_folder):
    return validate_foodieqa(malformed_folder)


@pytest.mark.parametrize("index", [i for i, case in enumerate(CASES) if case[1] is not None])
def test_each_bad_record_is_reported_with_its_reason(report, index):
    _, kind, phrase = CASES[index]
    bad = {b.index: b for b in report.bad_records}
    assert index in bad, f"record {index} was not reported"
    assert kind in {p.kind for p in bad[index].problems}
    assert phrase in bad[index].describe()
    assert bad[index].describe() in report.summary()


def test_valid_records_are_kept_and_nothing_vanishes(report):
    good = [i for i, case in enumerate(CASES) if case[1] is None]
    assert [r["question_id"] for r in report.valid_records] == [CASES[i][0]["question_id"] for i in good]
    assert report.total == len(CASES)
    assert len(report.valid_records) + report.skipped == report.total
    assert report.problem_counts() == {"missing field": 5, "wrong choice count": 2, "answer not in 0..3": 2,
                                       "duplicate question_id": 1, "missing image": 2, "unreadable image": 2}
    assert report.image_sizes["images/a.jpg"] == (64, 48)


def test_conversion_skips_bad_records_and_writes_the_report(malformed_folder, report, tmp_path):
    prepared = prepare_foodieqa(malformed_folder, tmp_path / "out", style="mcq", test_fraction=0.3, seed=0)
    counts = prepared.manifest["counts"]
    assert counts["valid"] == len(report.valid_records) and counts["skipped"] == report.skipped
    assert counts["train_questions"] + counts["test_questions"] == counts["valid"]
    written = json.loads((tmp_path / "out" / "validation_report.json").read_text(encoding="utf-8"))
    assert [b["index"] for b in written["bad_records"]] == [b.index for b in report.bad_records]
    assert written["problem_counts"] == report.problem_counts()


@pytest.mark.parametrize(
    "content, phrase",
    [('[{"question": ', "not valid UTF-8 JSON"), ('{"vqa-0": {}}', "must hold a JSON list"),
     (None, "does not exist")],
)
def test_unreadable_question_files_fail_with_the_fix(tmp_path, content, phrase):
    if content is not None:
        (tmp_path / "sivqa_tidy.json").write_text(content, encoding="utf-8")
    with pytest.raises(FoodieQAFormatError, match=phrase):
        load_sivqa(tmp_path)
