"""Lesson 01's pictures and tables: every drawing is a plain matplotlib Figure, none left open in pyplot."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from course_utils import viz


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


def test_parameter_bars_split_each_model_into_its_three_parts():
    figure = viz.plot_component_parameters({"a": {"vision_model": 3, "mlp1": 1, "language_model": 6},
                                            "b": {"vision_model": 1, "mlp1": 1, "language_model": 2}})
    widths = [round(bar.get_width(), 6) for bar in figure.axes[0].patches]
    assert widths == [0.3, 0.1, 0.6, 0.25, 0.25, 0.5]


def test_every_drawing_is_a_figure_outside_pyplot():
    plt.close("all")
    figures = [
        viz.draw_architecture_families(),
        viz.plot_component_parameters({"m": {"vision_model": 1, "mlp1": 1, "language_model": 1}}),
        viz.draw_tiling(Image.new("RGB", (300, 200)), max_num=4, image_size=100),
    ]
    assert all(isinstance(figure, Figure) for figure in figures)
    assert plt.get_fignums() == []  # a notebook shows each exactly once, as the cell's value
