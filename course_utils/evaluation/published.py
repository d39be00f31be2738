"""The FoodieQA paper's single-image VQA accuracies (Li et al., EMNLP 2024, arXiv 2406.11030), in percent.

They were measured on the whole ``sivqa_tidy.json`` with the authors' multiple-choice prompts (see
:mod:`course_utils.evaluation.protocols`), in Chinese and in English. The paper has no InternVL2 row: the
course measures its own with the same protocol. The course's held-out split is a different, smaller question
set, so its figures sit *beside* these, not in the same table.
"""

from __future__ import annotations

CHANCE_ACCURACY = 0.25  # four options

# model: (Chinese prompt, English prompt), accuracy in percent
PUBLISHED_SIVQA_ACCURACY = {
    "Human": (74.41, 46.53),
    "GPT-4o": (72.66, 67.97),
    "GPT-4V": (63.67, 60.16),
    "Yi-VL-34B": (52.73, 48.05),
    "Yi-VL-6B": (49.61, 41.41),
    "Qwen-VL-12B": (48.83, 42.97),
    "Idefics2-8B": (46.87, 52.73),
    "Phi-3-vision": (42.58, 44.53),
    "Mantis-8B": (41.80, 47.66),
}
PUBLISHED_SIVQA_QUESTIONS = 256  # every published figure is a multiple of 1/256
