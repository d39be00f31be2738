"""Lesson 01's pictures and tables."""

import matplotlib

matplotlib.use("Agg")

from PIL import Image

from course_utils import viz
from course_utils.tiny_model import build_config, build_model


def test_component_counts_add_up_to_the_model():
    model = build_model(build_config("tiny", vocab_size=100))
    counts = viz.component_parameter_counts(model)
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts["mlp1"] == 256 * 2 + 256 * 128 + 128 + 128 * 128 + 128  # LayerNorm, Linear, Linear


def test_tiling_figure_has_one_panel_per_tile_plus_overview_and_thumbnail():
    figure = viz.draw_tiling(Image.new("RGB", (800, 600)), max_num=12, image_size=448)
    assert len(figure.axes) == 1 + 12 + 1
    assert "4x3" in figure.axes[0].get_title()


def test_tiling_table_and_markdown():
    rows = viz.tiling_table([(448, 448), (896, 448)], max_num=12, image_size=448, tokens_per_tile=256)
    assert rows == [{"image": "448x448", "grid": "1x1", "tiles": 1, "image_tokens": 256},
                    {"image": "896x448", "grid": "2x1", "tiles": 3, "image_tokens": 768}]
    markdown = viz.markdown_table(rows).splitlines()
    assert markdown[0] == "| image | grid | tiles | image_tokens |" and markdown[3] == "| 896x448 | 2x1 | 3 | 768 |"


def test_architecture_families_figure_has_four_panels():
    assert len(viz.draw_architecture_families().axes) == 4
