"""Conversion to XTuner's format: held-out split by dish, both prompt styles and their scoring, manifest, data root."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import pytest

from course_utils.foodieqa import (
    format_question, build_target, ensure_prepared_foodieqa, is_correct, load_manifest, load_sivqa,
    make_synthetic_foodieqa, parse_reply, prepare_foodieqa, register_cli, resolve_data_root, split_by_dish,
)
from course_utils.foodieqa.convert import dish_groups

CHOICES = ["川菜", "粤菜", "鲁菜", "东北菜"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_synthetic_foodieqa(tmp_path_factory.mktemp("src") / "FoodieQA", dishes=12, seed=1)


@pytest.fixture(scope="module", params=["mcq", "original"])
def prepared(request, source, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return prepare_foodieqa(source, out, style=request.param, test_fraction=0.25, seed=5)


def test_no_dish_and_no_image_is_in_both_splits(prepared, source):
    by_id = {r["question_id"]: r for r in load_sivqa(source)}
    train_records = [by_id[s["id"]] for s in prepared.train]
    train_dishes = {r["food_meta"]["id"] for r in train_records}
    test_dishes = {item["food_id"] for item in prepared.test}
    assert train_dishes and test_dishes and not train_dishes & test_dishes
    assert not {s["image"] for s in prepared.train} & {item["image"] for item in prepared.test}
    assert len(test_dishes) == 3  # 25 % of 12 dishes
    cuisines = {r["food_meta"]["food_type"] for r in train_records}
    assert len(cuisines) == 6, "every cuisine must stay in training"


def test_manifest_counts_match_the_files(prepared):
    manifest = load_manifest(prepared.out_dir)
    counts = manifest["counts"]
    train = json.loads(Path(manifest["train_path"]).read_text(encoding="utf-8"))
    test = json.loads(Path(manifest["test_path"]).read_text(encoding="utf-8"))
    assert counts["train_questions"] == len(train) and counts["test_questions"] == len(test)
    assert counts["train_questions"] + counts["test_questions"] == counts["valid"] == 12 * 3 * 4
    assert counts["train_dishes"] + counts["test_dishes"] == 12
    assert counts["train_images"] + counts["test_images"] == 36
    assert sorted(manifest["test_dish_ids"]) == sorted({item["food_id"] for item in test})
    assert len(manifest["source"]["sivqa_sha256"]) == 64 and manifest["seed"] == 5
    assert all((Path(manifest["image_folder"]) / s["image"]).is_file() for s in train)


def test_split_is_fixed_by_seed(source):
    records = load_sivqa(source)
    held_out = lambda seed: {r["food_meta"]["id"] for r in split_by_dish(records, 0.25, seed)[1]}  # noqa: E731
    assert held_out(5) == held_out(5)
    assert len({frozenset(held_out(seed)) for seed in range(6)}) > 1


def test_dishes_sharing_an_image_or_a_name_stay_together():
    def rec(dish_id, image, name):
        return {"food_meta": {"id": dish_id, "food_file": image, "food_name": name, "food_type": "川菜"}}

    records = [rec(1, "a.jpg", "锅包肉"), rec(2, "a.jpg", "锅包肉2"), rec(3, "c.jpg", "锅包肉2"), rec(4, "d.jpg", "大盘鸡")]
    groups = sorted(sorted(r["food_meta"]["id"] for r in g) for g in dish_groups(records))
    assert groups == [[1, 2, 3], [4]]


@pytest.mark.parametrize("fraction", [0, 1, -0.1])
def test_test_fraction_must_be_a_share(source, fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_dish(load_sivqa(source), fraction, 0)


def test_samples_have_xtuners_shape_and_the_styles_targets(prepared, source):
    by_id = {r["question_id"]: r for r in load_sivqa(source)}
    for sample in prepared.train:
        record = by_id[sample["id"]]
        human, gpt = sample["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<image>\n") and human["value"].count("<image>") == 1
        assert sample["image"] == record["food_meta"]["food_file"] and len(sample["image_wh"]) == 2
        right = record["choices"][int(record["answer"])]
        if prepared.manifest["style"] == "mcq":
            assert gpt["value"] == "ABCD"[int(record["answer"])]
            assert all(f"（{letter}) {choice}" in human["value"] for letter, choice in zip("ABCD", record["choices"]))
        else:
            assert gpt["value"] == f"{right}，图中的菜是{record['food_meta']['food_name']}"
            assert human["value"] == "<image>\n" + record["question"]


def test_the_target_scores_right_and_every_other_choice_wrong(prepared):
    for item in prepared.test:
        assert is_correct(item["target"], item)
        wrong = [i for i in range(4) if i != item["answer_index"]]
        for index in wrong:
            reply = "ABCD"[index] if item["style"] == "mcq" else f"{item['choices'][index]}，图中的菜是{item['food_name']}"
            assert not is_correct(reply, item)


@pytest.mark.parametrize(
    "reply, style, expected",
    [
        ("B", "mcq", 1), ("答案是（C) 鲁菜", "mcq", 2), ("I think it is D.", "mcq", 3), ("选鲁菜", "mcq", 2),
        ("不知道", "mcq", None), ("粤菜，图中的菜是川味红烧牛肉", "original", 1),
        ("这是东北菜，不是川菜", "original", 3), ("图中的菜是川味红烧牛肉", "original", None),
    ],
)
def test_replies_are_parsed_in_both_styles(reply, style, expected):
    assert parse_reply(reply, CHOICES, style) == expected


def test_unknown_style_is_refused(source, tmp_path):
    record = load_sivqa(source)[0]
    for call in (lambda: format_question(record, "chat"), lambda: build_target(record, "chat"),
                 lambda: prepare_foodieqa(source, tmp_path, style="chat")):
        with pytest.raises(ValueError, match="mcq, original"):
            call()


def test_data_root_order_argument_then_environment_then_synthetic(source, tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("DATA_ROOT", raising=False)
    synthetic = resolve_data_root()
    assert synthetic == (tmp_path / "run" / "data" / "synthetic-foodieqa").resolve()
    assert len(load_sivqa(synthetic)) == 40 * 3 * 4
    monkeypatch.setenv("DATA_ROOT", str(source.parent))  # the folder holding FoodieQA/ works too
    assert resolve_data_root() == source.resolve()
    assert resolve_data_root(synthetic) == synthetic
    with pytest.raises(FileNotFoundError, match="download-foodieqa"):
        resolve_data_root(tmp_path)


def test_data_root_may_be_a_downloaded_zip(source, tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    archive = tmp_path / "FoodieQA.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in source.rglob("*"):
            zf.write(path, Path("FoodieQA") / path.relative_to(source))
    root = resolve_data_root(archive)
    assert root.parent.parent == (tmp_path / "run" / "data" / "foodieqa").resolve()
    assert root.parent.name.startswith("FoodieQA-") and root.name == "FoodieQA"  # unzipped once per zip content
    assert load_sivqa(root) == load_sivqa(source)
    assert resolve_data_root(archive) == root


def test_an_empty_data_root_is_an_error_not_the_synthetic_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="data root is empty"):
            resolve_data_root(empty)
    assert not (tmp_path / "run" / "data").exists()


def test_ensure_prepared_reuses_matching_data_and_redoes_other_settings(source, tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    first = ensure_prepared_foodieqa(source, style="mcq", seed=3)
    manifest_file = Path(first["train_path"]).with_name("manifest.json")
    stamp = manifest_file.stat().st_mtime_ns
    assert ensure_prepared_foodieqa(source, style="mcq", seed=3) == first
    assert manifest_file.stat().st_mtime_ns == stamp
    assert ensure_prepared_foodieqa(source, style="original", seed=3)["style"] == "original"


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare-foodieqa"):
        load_manifest(tmp_path)


def test_cli_prepare(source, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prepare-foodieqa", str(source), str(tmp_path / "out"), "--style", "original",
                              "--test-fraction", "0.5", "--seed", "1"])
    assert args.handler(args) == 0
    manifest = load_manifest(tmp_path / "out")
    assert (manifest["style"], manifest["test_fraction"], manifest["counts"]["test_dishes"]) == ("original", 0.5, 6)
    assert "144 valid questions (0 skipped)" in capsys.readouterr().out


def test_a_validation_report_is_reused_only_for_its_own_folder(source, tmp_path):
    from course_utils.foodieqa import validate_foodieqa

    report = validate_foodieqa(source)
    prepared = prepare_foodieqa(source, tmp_path / "out", report=report)
    assert prepared.report is report
    with pytest.raises(ValueError, match="validation report is of"):
        prepare_foodieqa(tmp_path, tmp_path / "other", report=report)


def test_a_folder_whose_records_are_all_skipped_says_how_many_and_why(source, tmp_path):
    """Issue 22 row 10: a FoodieQA folder without its images/ folder."""
    import shutil

    copy = tmp_path / "FoodieQA"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("images"))
    total = len(load_sivqa(source))
    with pytest.raises(ValueError, match=rf"^{total} of {total} records in .* were skipped, leaving 0 dish\(es\): "
                                         rf"a held-out split needs at least 2. The commonest reason \({total} records\): "
                                         rf"missing image, e\.g\. record 0 "):
        prepare_foodieqa(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
