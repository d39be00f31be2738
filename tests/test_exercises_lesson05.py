"""Lesson 05's checks accept the right answer and reject plausible wrong ones with their hint, on scored replies made
here (no model runs)."""

from __future__ import annotations

from course_utils.evaluation import score_replies, wilson_interval
from course_utils.exercises import find_check

CHOICES = ["川菜", "粤菜", "鲁菜", "东北菜"]


def scored(replies: list[str], dishes: list[str] | None = None, style: str = "original") -> list[dict]:
    """Questions whose right answer is 川菜 (index 0), scored against ``replies``."""
    dishes = dishes or ["麻婆豆腐"] * len(replies)
    questions = [{"question_id": f"q{i}", "choices": CHOICES, "answer_index": 0, "answer_style": style,
                  "food_name": dish} for i, dish in enumerate(dishes)]
    return score_replies(questions, replies)


def test_unparsed_replies_are_counted_apart_from_wrong_ones():
    check = find_check("05.1")
    before = scored(["川菜，图中的菜是麻婆豆腐", "粤菜", "我不确定", "不知道"])  # 1 right, 1 wrong, 2 unparsed
    after = scored(["川菜", "川菜", "鲁菜", "好吃"])  # 2 right, 1 wrong, 1 unparsed
    assert check({"base": 2, "fine-tuned": 1}, before=before, after=after) is None
    assert "not right" in check({"base": 3, "fine-tuned": 2}, before=before, after=after)
    assert "swapped" in check({"base": 1, "fine-tuned": 2}, before=before, after=after)
    assert "dict" in check(3, before=before, after=after)


def test_accuracy_per_dish_is_a_share_per_dish_name():
    check = find_check("05.2")
    after = scored(["川菜", "粤菜", "川菜", "川菜", "嗯"], dishes=["麻婆豆腐", "麻婆豆腐", "锅包肉", "锅包肉", "锅包肉"])
    right = {"麻婆豆腐": 0.5, "锅包肉": 2 / 3}
    assert check(right, after=after) is None
    assert "share" in check({"麻婆豆腐": 50.0, "锅包肉": 200 / 3}, after=after)
    assert "unparsed" in check({"麻婆豆腐": 0.5, "锅包肉": 1.0}, after=after)  # the unparsed reply left out
    assert "food_name" in check({"麻婆豆腐": 0.5}, after=after)


def test_questions_needed_is_the_first_wilson_interval_ten_points_wide():
    check = find_check("05.3")
    low, high = wilson_interval(round(0.6 * 366), 366)
    before_low, before_high = wilson_interval(round(0.6 * 365), 365)
    assert high - low <= 0.10 < before_high - before_low  # the right answer, measured here
    assert check(366) is None
    assert "textbook" in check(369)
    assert "fewer questions" in check(400)
    assert "still" in check(128)
    assert "whole number" in check(366.0)


def test_above_chance_asks_for_the_interval_not_the_point():
    check = find_check("05.4")
    # 30 of 100 right: above 25 % as a point, but the interval (21.9 %, 39.6 %) reaches below chance
    lucky = scored(["川菜"] * 30 + ["粤菜"] * 70, style="mcq")
    # 60 of 100 right: clearly above chance
    strong = scored(["川菜"] * 60 + ["粤菜"] * 40, style="mcq")
    paper = {"paper_zh": strong, "paper_en": lucky}
    assert check({"paper_zh": True, "paper_en": False}, paper=paper) is None
    assert "lower end" in check({"paper_zh": True, "paper_en": True}, paper=paper)
    assert "keyed like" in check({"zh": True, "en": False}, paper=paper)
