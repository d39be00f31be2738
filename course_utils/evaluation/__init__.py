"""Lesson 05: measure what fine-tuning changed, on questions about dishes the model never saw in training.

The steps, each one call:

* :func:`heldout_questions` / :func:`paper_questions` - the questions: lesson 03's held-out split in either prompt
  style, or the FoodieQA paper's whole single-image set with the authors' Chinese or English prompt;
* :func:`evaluate_model` - one model answers them through the course's engines (batched, greedy), loaded by
  :func:`evaluation_engine`;
* :func:`parse_answer` (inside :func:`score_replies`) - which option a reply picks, or none ("unparsed");
* :func:`accuracy`, :func:`accuracy_by`, :func:`compare`, :func:`change_table` - accuracy with its 95 % Wilson
  interval, per cuisine / question type, and the paired before/after test (McNemar's exact test);
* :func:`plot_before_after`, :func:`plot_by_group`, :func:`plot_published`, :func:`plot_gallery` - the pictures.
"""

from .figures import pick_gallery, plot_before_after, plot_by_group, plot_gallery, plot_published
from .parsing import parse_answer
from .protocols import PAPER_LANGUAGES, heldout_questions, paper_prompt, paper_questions, sample_evenly
from .published import CHANCE_ACCURACY, PUBLISHED_SIVQA_ACCURACY
from .scoring import (accuracy, accuracy_by, agreement, ask, before_after_report, change_table, compare, evaluate_model,
                      evaluation_engine, greedy_settings, save_results, score_replies, summarise)
from .statistics import mcnemar_exact, wilson_interval

__all__ = [
    "CHANCE_ACCURACY", "PAPER_LANGUAGES", "PUBLISHED_SIVQA_ACCURACY", "accuracy", "accuracy_by", "agreement", "ask",
    "before_after_report", "change_table", "compare", "evaluate_model", "evaluation_engine", "greedy_settings",
    "heldout_questions", "mcnemar_exact", "paper_prompt", "paper_questions", "parse_answer", "pick_gallery",
    "plot_before_after", "plot_by_group", "plot_gallery", "plot_published", "sample_evenly", "save_results",
    "score_replies", "summarise", "wilson_interval",
]
