"""Evaluation loads each model through the engine interface with options that fit one GPU."""

from __future__ import annotations

import pytest

from course_utils import engines
from course_utils.evaluation import scoring


class RecordingEngine:
    """Answers every question with option A's text; remembers how it was loaded and whether it was closed."""

    def __init__(self, model_path, backend, **options):
        self.model_path, self.backend, self.options, self.closed = model_path, backend, options, False

    def answer_batch(self, requests, settings):
        return [engines.Answer(text="A", output_tokens=1, seconds=0.0) for _ in requests]

    def close(self):
        self.closed = True


@pytest.fixture
def loaded(monkeypatch):
    made = []

    def load_engine(model_path, backend="auto", **options):
        made.append(RecordingEngine(model_path, backend, **options))
        return made[-1]

    monkeypatch.setattr(engines, "load_engine", load_engine)
    return made


QUESTION = {"image": None, "prompt": "哪个菜系？", "answer_style": "mcq", "choices": ["川菜", "粤菜", "鲁菜", "湘菜"],
            "answer_index": 0, "question_id": "q0", "food_type": "川菜", "question_type": "cuisine_type"}


def test_lmdeploy_engines_get_a_modest_kv_cache_and_the_batch_size_as_their_limit(loaded):
    scoring.evaluate_model("model", {"set": [QUESTION]}, backend="lmdeploy", batch_size=8, max_dynamic_patch=1)
    (engine,) = loaded
    assert engine.options == {"cache_max_entry_count": scoring.LMDEPLOY_CACHE_SHARE, "max_batch_size": 8,
                              "max_dynamic_patch": 1}
    assert engine.closed


def test_each_question_is_scored_from_the_engines_reply(loaded):
    scored, info = scoring.evaluate_model("model", {"set": [QUESTION, {**QUESTION, "answer_index": 2}]},
                                          backend="lmdeploy")
    assert [item["outcome"] for item in scored["set"]] == ["correct", "wrong"]  # the engine always answers A
    assert info == {"model_path": "model", "backend": "lmdeploy"}


def test_a_learners_own_cache_share_wins(loaded):
    scoring.evaluate_model("model", {"set": [QUESTION]}, backend="turbomind", cache_max_entry_count=0.5)
    assert loaded[0].options["cache_max_entry_count"] == 0.5


def test_the_transformers_engine_gets_no_lmdeploy_knobs(loaded):
    scoring.evaluate_model("model", {"set": [QUESTION]}, backend="transformers", batch_size=8)
    assert loaded[0].options == {}


def test_an_engine_for_a_loop_of_ones_own_gets_the_same_options_and_stays_open(loaded):
    engine = scoring.evaluation_engine("model", backend="lmdeploy", batch_size=4, max_dynamic_patch=1)
    assert engine is loaded[0] and not engine.closed  # the caller closes it
    assert engine.options == {"cache_max_entry_count": scoring.LMDEPLOY_CACHE_SHARE, "max_batch_size": 4,
                              "max_dynamic_patch": 1}
