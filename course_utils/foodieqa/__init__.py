"""Lesson 03: FoodieQA, from the gated release (or its synthetic stand-in) to XTuner's InternVL training format.

The steps, each one call:

* :func:`resolve_data_root` - which FoodieQA (real, zip, ``download``, or the synthetic default; from
  :mod:`course_utils.paths`);
* :func:`validate_foodieqa` - every bad record listed with its reason, then skipped;
* :func:`foodieqa_statistics`, :func:`plot_statistics`, :func:`plot_sample_grid` - what the data holds;
* :func:`prepare_foodieqa` - held-out split by dish, ``train.json`` / ``test.json`` / ``manifest.json``;
* :func:`is_correct` - scores a model's reply to a held-out question in either prompt style.
"""

from ..paths import prepared_dir
from .cli import register_cli
from .convert import load_manifest, prepare_foodieqa, split_by_dish
from .defaults import ensure_prepared_foodieqa, ensure_synthetic_foodieqa, resolve_data_root
from .download import FoodieQADownloadError, download_foodieqa, extract_foodieqa_zip
from .layout import FoodieQAFormatError, answer_index, find_foodieqa_root, load_sivqa
from .prompts import PROMPT_STYLES, build_target, format_question, is_correct, parse_reply
from .stats import foodieqa_statistics, plot_sample_grid, plot_statistics
from .synthetic import make_synthetic_foodieqa
from .validate import ValidationReport, validate_foodieqa

__all__ = [
    "PROMPT_STYLES", "FoodieQADownloadError", "FoodieQAFormatError", "ValidationReport", "answer_index",
    "build_target", "download_foodieqa", "ensure_prepared_foodieqa", "ensure_synthetic_foodieqa",
    "extract_foodieqa_zip", "find_foodieqa_root", "foodieqa_statistics", "format_question", "is_correct",
    "load_manifest", "load_sivqa", "make_synthetic_foodieqa", "parse_reply", "plot_sample_grid", "plot_statistics",
    "prepare_foodieqa", "prepared_dir", "register_cli", "resolve_data_root", "split_by_dish", "validate_foodieqa",
]
