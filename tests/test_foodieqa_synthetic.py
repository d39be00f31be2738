"""The synthetic FoodieQA: FoodieQA's exact schema, deterministic by seed, fast, and pictures that show the rules."""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_utils.foodieqa import load_sivqa, make_synthetic_foodieqa, register_cli, validate_foodieqa
from course_utils.foodieqa.synthetic import CUISINES, INGREDIENTS, METHODS, QUESTIONS, max_dishes

RECORD_KEYS = {"question", "choices", "answer", "question_type", "food_name", "question_id", "food_meta",
               "question_en", "choices_en"}
FOOD_META_KEYS = {"main_ingredient", "id", "food_name", "food_type", "food_location", "food_file"}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """40 dishes, as the course's default."""
    return make_synthetic_foodieqa(tmp_path_factory.mktemp("synthetic") / "FoodieQA", dishes=40, seed=7)


def file_digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_builds_forty_dishes_with_a_question_of_each_type_per_picture(synthetic_root):
    assert len(load_sivqa(synthetic_root)) == 40 * 3 * len(QUESTIONS)
    assert len(list((synthetic_root / "images").glob("*.jpg"))) == 40 * 3


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    first = file_digests(make_synthetic_foodieqa(tmp_path / "a", dishes=6, seed=3))
    again = file_digests(make_synthetic_foodieqa(tmp_path / "b", dishes=6, seed=3))
    other = file_digests(make_synthetic_foodieqa(tmp_path / "c", dishes=6, seed=4))
    assert first == again
    assert {"sivqa_tidy.json", "images/001_0.jpg", "RULES.md"} <= set(first)
    assert first["sivqa_tidy.json"] != other["sivqa_tidy.json"]
    assert first["images/001_0.jpg"] != other["images/001_0.jpg"]


def test_records_follow_the_foodieqa_schema(synthetic_root):
    records = load_sivqa(synthetic_root)
    for record in records:
        assert set(record) == RECORD_KEYS
        assert set(record["food_meta"]) == FOOD_META_KEYS
        assert record["answer"] in {"0", "1", "2", "3"}  # a string index, as in the release
        assert len(record["choices"]) == len(set(record["choices"])) == 4
        assert len(record["choices_en"]) == 4
        assert record["food_name"] == record["food_meta"]["food_name"]
        assert (synthetic_root / record["food_meta"]["food_file"]).is_file()
    assert [r["question_id"] for r in records] == [f"vqa-{i}" for i in range(len(records))]
    report = validate_foodieqa(synthetic_root)
    assert report.skipped == 0 and len(report.valid_records) == len(records)


def test_answers_follow_the_dish_and_distractors_share_its_category(synthetic_root):
    region_of = {c.name: c.region for c in CUISINES}
    categories = {"cuisine_type": {c.name for c in CUISINES}, "region": {c.region for c in CUISINES},
                  "main-ingredient": {i.name for i in INGREDIENTS}, "cooking-skills": {m.name for m in METHODS}}
    english = {c.name: c.name_en for c in CUISINES} | {c.region: c.region_en for c in CUISINES} | \
              {i.name: i.name_en for i in INGREDIENTS} | {m.name: m.name_en for m in METHODS}
    for record in load_sivqa(synthetic_root):
        meta, right = record["food_meta"], record["choices"][int(record["answer"])]
        expected = {"cuisine_type": meta["food_type"], "region": region_of[meta["food_type"]],
                    "main-ingredient": meta["main_ingredient"][0]}.get(record["question_type"])
        assert expected in (None, right)
        if record["question_type"] == "cooking-skills":
            assert right in meta["food_name"]
        assert set(record["choices"]) <= categories[record["question_type"]]
        assert record["choices_en"] == [english[c] for c in record["choices"]]


def test_covers_cuisines_question_types_positions_and_varied_pictures(synthetic_root):
    records = load_sivqa(synthetic_root)
    assert {r["food_meta"]["food_type"] for r in records} == {c.name for c in CUISINES}
    assert Counter(r["question_type"] for r in records) == {q[0]: 120 for q in QUESTIONS}
    assert Counter(r["answer"] for r in records) == {"0": 120, "1": 120, "2": 120, "3": 120}
    images_of_dish: dict[int, set[str]] = {}
    for r in records:
        images_of_dish.setdefault(r["food_meta"]["id"], set()).add(r["food_meta"]["food_file"])
    assert all(len(files) == 3 for files in images_of_dish.values())
    sizes = {Image.open(synthetic_root / f).size for files in images_of_dish.values() for f in files}
    assert len(sizes) >= 4 and any(w != h for w, h in sizes)  # tiling differs between pictures
    first_dish = sorted(images_of_dish[1])
    assert len({hashlib.sha256((synthetic_root / f).read_bytes()).hexdigest() for f in first_dish}) == 3


def colour_votes(image: Image.Image, palette: list[tuple[int, int, int]], radius: float = 40) -> np.ndarray:
    """How many pixels (every second one in each direction) lie within ``radius`` of each palette colour."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)[::2, ::2].reshape(-1, 1, 3)
    return (np.linalg.norm(pixels - np.array(palette, dtype=np.float32), axis=-1) < radius).sum(axis=0)


def test_pictures_show_the_rules_for_every_dish(synthetic_root):
    """A colour count alone reads cuisine, ingredient and method off nearly every picture: the rules are visible."""
    labels: dict[str, dict[str, str]] = {}
    for r in load_sivqa(synthetic_root):
        meta = r["food_meta"]
        entry = labels.setdefault(meta["food_file"], {})
        entry.update(cuisine=meta["food_type"], ingredient=meta["main_ingredient"][0])
        if r["question_type"] == "cooking-skills":
            entry["method"] = r["choices"][int(r["answer"])]
    rules = {
        "cuisine": [(c.name, c.rim_colour) for c in CUISINES],
        "ingredient": [(i.name, i.colour) for i in INGREDIENTS],
        "method": [(m.name, m.sauce_colour or (50, 30, 20)) for m in METHODS],  # dry dishes: dark flakes
    }
    palette = [colour for options in rules.values() for _, colour in options]
    hits = Counter()
    for food_file, truth in labels.items():
        votes, start = colour_votes(Image.open(synthetic_root / food_file), palette), 0
        for attribute, options in rules.items():
            best = int(np.argmax(votes[start:start + len(options)]))
            hits[attribute] += options[best][0] == truth[attribute]
            start += len(options)
    for attribute in rules:
        share = hits[attribute] / len(labels)
        assert share >= 0.95, f"{attribute}: {hits[attribute]}/{len(labels)} pictures show their rule"


@pytest.mark.parametrize("dishes", [0, max_dishes() + 1])
def test_impossible_dish_counts_are_refused(tmp_path, dishes):
    with pytest.raises(ValueError, match="dishes must be between 1 and"):
        make_synthetic_foodieqa(tmp_path, dishes=dishes)


def test_cli_make_synthetic(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["make-synthetic-foodieqa", str(tmp_path / "syn"), "--dishes", "5", "--seed", "2"])
    assert args.handler(args) == 0
    assert len(load_sivqa(tmp_path / "syn")) == 5 * 3 * len(QUESTIONS)
    assert str(tmp_path / "syn") in capsys.readouterr().out
