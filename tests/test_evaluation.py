"""Evaluation without a model: answer parsing on real-looking replies, the statistics on hand-computed cases,
scoring and the paired comparison on plain inputs, the question sets, the results file and the pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_utils.evaluation import (accuracy, accuracy_by, agreement, ask, change_table, compare, heldout_questions,
                                     mcnemar_exact, paper_questions, parse_answer, pick_gallery, plot_before_after,
                                     plot_by_group, plot_gallery, plot_published, sample_evenly, save_results,
                                     score_replies, wilson_interval)

CUISINES = ["川菜", "粤菜", "鲁菜", "东北菜"]
INGREDIENTS = ["鸡", "鸡肉", "牛肉", "豆腐"]
ENGLISH = ["Sichuan", "Cantonese", "Shandong", "Northeastern"]

# (reply, options, prompt style, option picked or None); replies as models write them
REPLIES = [
    ("B", CUISINES, "mcq", 1),
    ("B.", CUISINES, "mcq", 1),
    ("  c ", CUISINES, "mcq", None),  # a lower-case letter is not an option letter
    ("答案是B", CUISINES, "mcq", 1),
    ("答案：C", CUISINES, "mcq", 2),
    ("正确答案为（D）", CUISINES, "mcq", 3),
    ("(B)", CUISINES, "mcq", 1),
    ("（B)", CUISINES, "mcq", 1),
    ("（D）东北菜", CUISINES, "mcq", 3),
    ("B) 粤菜", CUISINES, "mcq", 1),  # the reply to the authors' prompt, which ends with "为（"
    ("A、川菜", CUISINES, "mcq", 0),
    ("D 东北菜", CUISINES, "mcq", 3),
    ("我选择 C", CUISINES, "mcq", 2),
    ("选A", CUISINES, "mcq", 0),
    ("C选项", CUISINES, "mcq", 2),
    ("选项B正确", CUISINES, "mcq", 1),
    ("The answer is (C).", ENGLISH, "mcq", 2),
    ("Answer: D", ENGLISH, "mcq", 3),
    ("If had to select one of the options, my answer would be (A) Sichuan", ENGLISH, "mcq", 0),
    ("A dish from Shandong", ENGLISH, "mcq", 2),  # "A" is the article: the option text decides
    ("a cantonese dish", ENGLISH, "mcq", 1),
    ("B. 东北菜", CUISINES, "mcq", 1),  # letter and text disagree: the letter is the answer to a letter question
    ("粤菜", CUISINES, "mcq", 1),
    ("这道菜属于东北菜。", CUISINES, "mcq", 3),
    ("（A) 川菜\n（B) 粤菜\n（C) 鲁菜\n（D) 东北菜", CUISINES, "mcq", None),  # the option list repeated
    ("川菜还是粤菜呢", CUISINES, "mcq", None),
    ("我不知道", CUISINES, "mcq", None),
    ("", CUISINES, "mcq", None),
    ("BEEF", ENGLISH, "mcq", None),
    ("川菜，图中的菜是麻婆豆腐", CUISINES, "original", 0),
    ("鸡肉，图中的菜是宫保鸡丁", INGREDIENTS, "original", 1),  # 鸡 lies inside 鸡肉: one option named
    ("鸡，图中的菜是辣子鸡", INGREDIENTS, "original", 0),
    ("豆腐，图中的菜是牛肉豆腐煲", INGREDIENTS, "original", 3),  # the dish name after 图中的菜是 is not read
    ("图中的菜是鲁菜", CUISINES, "original", None),  # nothing before 图中的菜是
    ("这是一道东北菜", CUISINES, "original", 3),
    ("答案是C", CUISINES, "original", 2),
    ("䷀䷁ 鱼香", CUISINES, "original", None),
]


@pytest.mark.parametrize("reply, choices, style, expected", REPLIES, ids=[r[0][:18] or "empty" for r in REPLIES])
def test_parse_answer_on_real_looking_replies(reply, choices, style, expected):
    assert parse_answer(reply, choices, style) == expected


def test_unknown_answer_style_is_refused():
    with pytest.raises(ValueError, match="mcq"):
        parse_answer("A", CUISINES, "letters")


@pytest.mark.parametrize("successes, total, low, high", [
    (7, 10, 0.3968, 0.8922),  # worked by hand: centre 0.6445, half-width 0.2477
    (0, 10, 0.0, 0.2775),  # no collapse to [0, 0] at 0 %
    (10, 10, 0.7225, 1.0),
    (45, 50, 0.7864, 0.9565),
])
def test_wilson_interval_on_hand_computed_cases(successes, total, low, high):
    assert wilson_interval(successes, total) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@pytest.mark.parametrize("fixed, broken, p_value", [
    (8, 1, 20 / 512),  # 2 * (C(9,0) + C(9,1)) / 2^9
    (6, 0, 2 / 64),
    (5, 0, 2 / 32),  # five fixes and nothing broken is not yet significant at 5 %
    (1, 8, 20 / 512),  # symmetric
    (5, 5, 1.0),  # capped at 1
    (0, 0, 1.0),  # never disagree: no evidence of a change
    (12, 3, 2 * (1 + 15 + 105 + 455) / 2**15),
])
def test_mcnemar_exact_on_hand_computed_cases(fixed, broken, p_value):
    assert mcnemar_exact(fixed, broken) == pytest.approx(p_value, rel=1e-12)


def question(question_id, answer_index, food_type="川菜", question_type="cuisine_type", image="x.png"):
    return {"question_id": question_id, "image": image, "prompt": f"问题 {question_id}", "choices": CUISINES,
            "answer_index": answer_index, "answer_style": "mcq", "food_id": question_id, "food_name": f"菜{question_id}",
            "food_type": food_type, "question_type": question_type}


def test_scoring_counts_unparsed_apart_from_wrong_and_groups_by_field():
    questions = [question("q0", 0), question("q1", 1, "粤菜"), question("q2", 2, "粤菜"), question("q3", 3, "粤菜")]
    scored = score_replies(questions, ["A", "答案是C", "我不知道", "D"])
    assert [item["outcome"] for item in scored] == ["correct", "wrong", "unparsed", "correct"]
    assert [item["picked"] for item in scored] == [0, 2, None, 3]
    summary = accuracy(scored)
    assert (summary["questions"], summary["correct"], summary["wrong"], summary["unparsed"]) == (4, 2, 1, 1)
    assert summary["accuracy"] == 0.5 and summary["ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    by_cuisine = accuracy_by(scored, "food_type")
    assert list(by_cuisine) == ["川菜", "粤菜"]
    assert (by_cuisine["川菜"]["accuracy"], by_cuisine["粤菜"]["accuracy"]) == (1.0, pytest.approx(1 / 3))
    with pytest.raises(ValueError, match="3 replies for 4 questions"):
        score_replies(questions, ["A", "B", "C"])


def test_paired_comparison_and_change_table():
    questions = [question(f"q{i}", i % 4) for i in range(10)]
    letters = "ABCD"
    right = [letters[q["answer_index"]] for q in questions]
    wrong = [letters[(q["answer_index"] + 1) % 4] for q in questions]
    before = score_replies(questions, right[:2] + wrong[2:9] + ["?"])  # 2 right, 7 wrong, 1 unparsed
    after = score_replies(questions[::-1], (right[:1] + wrong[1:2] + right[2:])[::-1])  # another order
    result = compare(before, after)
    assert result["changes"] == {"fixed": 8, "broken": 1, "still right": 1, "still wrong": 0}
    assert result["mcnemar_p"] == pytest.approx(20 / 512)
    assert (result["before"]["accuracy"], result["after"]["accuracy"]) == (0.2, 0.9)
    table = change_table(before, after)
    assert [row["change"] for row in table][:3] == ["still right", "broken", "fixed"]
    assert table[9]["outcome before"] == "unparsed" and table[9]["reply before"] == "?"
    assert table[0]["right answer"] == CUISINES[0]
    with pytest.raises(ValueError, match="same questions"):
        compare(before, after[:-1])
    assert agreement(before, after) == {"questions": 10, "same_reply": 1, "same_pick": 1}
    assert agreement(after, after) == {"questions": 10, "same_reply": 10, "same_pick": 10}
    changes = {row["question_id"]: row["change"] for row in table}
    assert [changes[question_id] for question_id in pick_gallery(table, 4)] == ["fixed", "broken", "still right", "fixed"]


class RecordingEngine:
    """Answers each question with the letter of its number, and records the batches it was sent."""

    def __init__(self):
        self.batches = []

    def answer_batch(self, requests, settings=None):
        from types import SimpleNamespace

        self.batches.append((len(requests), settings))
        return [SimpleNamespace(text="ABCD"[int(prompt.split("q")[1]) % 4]) for _, prompt in requests]


def test_ask_sends_batches_and_keeps_the_question_order():
    engine = RecordingEngine()
    questions = [question(f"q{i}", i % 4) for i in range(7)]
    replies = ask(engine, questions, settings="greedy", batch_size=3)
    assert replies == ["A", "B", "C", "D", "A", "B", "C"]
    assert engine.batches == [(3, "greedy"), (3, "greedy"), (1, "greedy")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from course_utils.foodieqa import load_manifest, make_synthetic_foodieqa, prepare_foodieqa

    root = make_synthetic_foodieqa(tmp_path_factory.mktemp("eval") / "FoodieQA", dishes=8, seed=0)
    out = tmp_path_factory.mktemp("prepared")
    prepare_foodieqa(root, out, style="mcq", test_fraction=0.25, seed=0)
    return root, load_manifest(out)


def test_heldout_questions_in_both_styles_ask_the_held_out_dishes(prepared):
    root, manifest = prepared
    test_items = json.loads(open(manifest["test_path"], encoding="utf-8").read())
    mcq, original = heldout_questions(manifest, "mcq"), heldout_questions(manifest, "original")
    assert len(mcq) == len(original) == len(test_items) > 0
    assert {q["food_id"] for q in mcq} == set(manifest["test_dish_ids"])
    assert not {q["food_id"] for q in mcq} & set(manifest["train_dish_ids"])
    first_mcq, first_original = mcq[0], original[0]
    assert first_mcq["prompt"].startswith(test_items[0]["question"]) and "（A) " in first_mcq["prompt"]
    assert first_original["prompt"] == test_items[0]["question"]
    assert first_original["answer_style"] == "original" and first_mcq["answer_style"] == "mcq"
    assert all(Path(q["image"]).is_file() for q in mcq)


def test_paper_protocol_asks_every_question_with_the_authors_prompt(prepared):
    root, _ = prepared
    records = json.loads((root / "sivqa_tidy.json").read_text(encoding="utf-8"))
    from course_utils.foodieqa import validate_foodieqa

    zh, skipped = paper_questions(root, "zh")
    en, _ = paper_questions(root, "en", report=validate_foodieqa(root))
    assert len(zh) == len(en) == len(records) and skipped == 0
    record = next(r for r in records if r["question_id"] == zh[0]["question_id"])
    options = "".join(f"（{letter}) {choice}\n" for letter, choice in zip("ABCD", record["choices"]))
    assert zh[0]["prompt"] == f"{record['question']} 选项有: {options}, 请根据上图从所提供的选项中选择一个正确答案，为（"
    assert en[0]["prompt"].startswith(record["question_en"] + " Here are the options: （A) " + record["choices_en"][0])
    assert en[0]["prompt"].endswith("my answer would be (") and en[0]["choices"] == record["choices_en"]
    with pytest.raises(ValueError, match="zh"):
        paper_questions(root, "fr")


def test_results_are_written_whole(tmp_path):
    path = save_results({"accuracy": 0.5, "菜": "川菜"}, tmp_path / "evaluation" / "results.json")
    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.5, "菜": "川菜"}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind


def test_pictures_draw_the_measured_accuracies(prepared):
    _, manifest = prepared
    questions = heldout_questions(manifest, "mcq")[:6]
    before = score_replies(questions, ["?"] * 6)
    after = score_replies(questions, ["ABCD"[q["answer_index"]] for q in questions[:5]] + ["?"])
    comparison = compare(before, after)
    figure = plot_before_after({"mcq": comparison})
    heights = sorted(round(bar.get_height(), 6) for bar in figure.axes[0].patches)
    assert heights == [0.0, round(100 * 5 / 6, 6)]
    by_type = plot_by_group(accuracy_by(before, "question_type"), accuracy_by(after, "question_type"), "per type")
    assert len(by_type.axes[0].patches) == 2 * len({q["question_type"] for q in questions})
    chance_lines = [line for line in by_type.axes[0].lines if line.get_linestyle() == "--"]
    assert len(chance_lines) == 1
    open_questions = plot_by_group(accuracy_by(before, "question_type"), accuracy_by(after, "question_type"), "open",
                                   chance=False)  # no options to guess among: no chance line
    assert not [line for line in open_questions.axes[0].lines if line.get_linestyle() == "--"]
    published = plot_published({"this course": (50.0, None)})
    assert len(published.axes[0].patches) == 2 * 9 + 1  # the paper's nine models in two languages, ours in one
    shown = pick_gallery(change_table(before, after), 4)
    gallery = plot_gallery(before, after, shown)
    texts = [text.get_text() for axes in gallery.axes for text in axes.texts]
    right_after = sum(item["outcome"] == "correct" for item in after if item["question_id"] in shown)
    assert sum("tuned:" in text for text in texts) == 4 and sum(text.startswith("✓ tuned") for text in texts) == right_after
    assert sum(text.startswith("? base") for text in texts) == 4  # the base model's "?" picks nothing
    long_reply = score_replies(questions[:1], ["川菜\ufffd" * 40])
    cut = plot_gallery(long_reply, long_reply, [questions[0]["question_id"]], columns=1, width=30)
    line = next(text.get_text() for text in cut.axes[0].texts if " base: " in text.get_text())
    assert line.endswith("…") and "\ufffd" not in line and 2 * len(line) <= 30 + 12  # 2 columns a character


def test_sample_evenly_spreads_over_the_list():
    questions = [question(f"q{i}", i % 4) for i in range(10)]
    assert [q["question_id"] for q in sample_evenly(questions, 4)] == ["q0", "q2", "q5", "q7"]
    assert sample_evenly(questions, None) == questions == sample_evenly(questions, 50)
    with pytest.raises(ValueError):
        sample_evenly(questions, 0)
