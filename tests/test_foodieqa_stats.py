"""Statistics as plain data, the two figures, and the CJK font that lets their Chinese text render."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure

from course_utils import fonts
from course_utils.foodieqa import (
    foodieqa_statistics, load_sivqa, make_synthetic_foodieqa, plot_sample_grid, plot_statistics,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_synthetic_foodieqa(tmp_path_factory.mktemp("stats") / "FoodieQA", dishes=8, seed=2)


def test_statistics_count_types_cuisines_and_answer_letters(source):
    records = load_sivqa(source)
    stats = foodieqa_statistics(records)
    assert (stats["questions"], stats["dishes"], stats["images"]) == (96, 8, 24)
    assert stats["by_question_type"] == {"cooking-skills": 24, "cuisine_type": 24, "main-ingredient": 24, "region": 24}
    assert sum(stats["by_cuisine"].values()) == 96 and len(stats["by_cuisine"]) == 6
    assert list(stats["by_cuisine"].values()) == sorted(stats["by_cuisine"].values(), reverse=True)
    assert stats["answer_positions"] == {"A": 24, "B": 24, "C": 24, "D": 24}


def test_answer_positions_show_an_imbalance():
    records = [{"answer": a, "question_type": "t", "food_meta": {"id": 1, "food_file": "x", "food_type": "川菜"}}
               for a in ("0", "0", "0", "2")]
    assert foodieqa_statistics(records)["answer_positions"] == {"A": 3, "B": 0, "C": 1, "D": 0}


def render_without_missing_glyphs(figure: Figure) -> bytes:
    """PNG bytes of the figure; fails if matplotlib warns that a glyph is missing from the font."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure.savefig(buffer, format="png")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing
    return buffer.getvalue()


def test_statistics_figure_has_one_bar_per_category(source):
    stats = foodieqa_statistics(load_sivqa(source))
    figure = plot_statistics(stats)
    assert isinstance(figure, Figure) and len(figure.axes) == 3
    heights = [[bar.get_width() for bar in axes.patches] for axes in figure.axes]
    assert sorted(heights[1]) == sorted(stats["by_cuisine"].values())
    assert heights[2] == [24, 24, 24, 24]
    assert render_without_missing_glyphs(figure).startswith(b"\x89PNG")


def test_sample_grid_shows_images_with_their_questions_in_chinese(source):
    figure = plot_sample_grid(load_sivqa(source), source, count=6, columns=3, seed=0)
    shown = [axes for axes in figure.axes if axes.images]
    assert len(shown) == 6
    titles = [axes.get_title() for axes in shown]
    assert len({t.split(" · ")[1] for t in titles}) == 6, "one sample per cuisine first"
    texts = [t.get_text() for axes in shown for t in axes.texts]
    assert all("A. " in t and "✓" in t for t in texts)
    render_without_missing_glyphs(figure)


def test_the_cjk_font_has_chinese_glyphs_and_becomes_the_default():
    path = fonts.find_cjk_font()
    assert fonts.font_has_glyphs(path, "菜川粤图中的")
    family = fonts.use_cjk_font()
    assert matplotlib.rcParams["font.sans-serif"][0] == family


def test_a_latin_only_font_is_not_taken_for_a_cjk_one():
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    assert fonts.font_has_glyphs(dejavu, "A") and not fonts.font_has_glyphs(dejavu, "菜")


def test_no_cjk_font_fails_with_the_install_command(monkeypatch):
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    monkeypatch.setattr(fonts, "packaged_cjk_fonts", lambda: [dejavu])
    monkeypatch.setattr(fonts, "system_cjk_fonts", lambda: [])
    with pytest.raises(fonts.CJKFontNotFoundError, match="pip install mplfonts.*apt-get install fonts-noto-cjk"):
        fonts.use_cjk_font()
