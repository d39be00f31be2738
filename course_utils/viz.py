"""Pictures for lesson 01: multimodal architecture families, InternVL2's parts, and dynamic tiling.

Every drawing function returns a ``matplotlib.figure.Figure`` made without pyplot, so a notebook shows it exactly
once (as the cell's value) and nothing stays open in pyplot's global state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from .internvl.preprocessing import choose_grid, dynamic_preprocess

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Four ways to build a multimodal LLM, each as boxes (label, x, y) and arrows (from, to) on a 10x6 canvas.
ARCHITECTURE_FAMILIES = {
    "Separate encoders + shared decoder\n(LLaVA, InternVL2)": (
        [("image", 1.5, 5), ("vision encoder", 1.5, 3.5), ("projector", 1.5, 2), ("text", 6, 5),
         ("token embeddings", 6, 3.5), ("LLM decoder", 4, 0.6)],
        [(0, 1), (1, 2), (2, 5), (3, 4), (4, 5)],
    ),
    "Joint encoder\n(one Transformer sees both)": (
        [("image patches", 1.5, 5), ("text tokens", 6, 5), ("joint Transformer", 4, 3), ("output", 4, 0.8)],
        [(0, 2), (1, 2), (2, 3)],
    ),
    "Cross-modal conversion\n(image -> text first)": (
        [("image", 1.5, 5), ("captioner / OCR", 1.5, 3), ("text", 6, 5), ("LLM", 4, 0.8)],
        [(0, 1), (1, 3), (2, 3)],
    ),
    "Cross-attention\n(Flamingo-style)": (
        [("image", 1.5, 5), ("vision encoder", 1.5, 3), ("text", 6, 5),
         ("LLM with cross-attn layers", 5, 1.2)],
        [(0, 1), (1, 3), (2, 3)],
    ),
}


def draw_architecture_families() -> Figure:
    """A 2x2 figure of the four families of multimodal models, as box-and-arrow sketches."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7))
    axes = figure.subplots(2, 2)
    for ax, (title, (boxes, arrows)) in zip(axes.flat, ARCHITECTURE_FAMILIES.items()):
        ax.set_xlim(-0.5, 8.5)
        ax.set_ylim(-0.3, 6)
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        for start, end in arrows:
            (_, x0, y0), (_, x1, y1) = boxes[start], boxes[end]
            ax.annotate("", xy=(x1, y1 + 0.35), xytext=(x0, y0 - 0.35),
                        arrowprops=dict(arrowstyle="->", color="0.35", lw=1.4))
        for label, x, y in boxes:
            ax.text(x, y, label, ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.35", facecolor="#e8f0fb", edgecolor="#4a6fa5"))
    figure.tight_layout()
    return figure


def plot_component_parameters(counts_by_model: dict[str, dict[str, int]]) -> Figure:
    """Stacked horizontal bars: how each model's parameters split between ViT, projector and LLM."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 1.2 + 0.7 * len(counts_by_model)))
    ax = figure.subplots()
    colours = {"vision_model": "#4a6fa5", "mlp1": "#e39c3b", "language_model": "#5b9e6b"}
    for row, (name, counts) in enumerate(counts_by_model.items()):
        total, left = sum(counts.values()), 0.0
        for part, count in counts.items():
            share = count / total
            ax.barh(row, share, left=left, color=colours[part], label=part if row == 0 else None)
            if share > 0.06:
                ax.text(left + share / 2, row, f"{count / 1e6:,.1f} M", ha="center", va="center", color="white", fontsize=9)
            left += share
    ax.set_yticks(range(len(counts_by_model)), list(counts_by_model))
    ax.set_xlabel("share of parameters")
    ax.set_xlim(0, 1)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, frameon=False)
    figure.tight_layout()
    return figure


def draw_tiling(image: Image.Image, max_num: int = 12, image_size: int = 448, use_thumbnail: bool = True) -> Figure:
    """The image with its tile grid drawn over it, next to the tiles (and thumbnail) the model sees."""
    from matplotlib.figure import Figure

    columns, rows = choose_grid(*image.size, 1, max_num, image_size)
    tiles = dynamic_preprocess(image, 1, max_num, image_size, use_thumbnail)
    figure = Figure(figsize=(12, 4.5))
    grid = figure.add_gridspec(max(rows, 2), columns + 2 + columns)
    overview = figure.add_subplot(grid[:, : columns + 1])
    overview.imshow(image)
    for c in range(1, columns):
        overview.axvline(c * image.width / columns, color="yellow", lw=2)
    for r in range(1, rows):
        overview.axhline(r * image.height / rows, color="yellow", lw=2)
    overview.set_title(f"{image.width}x{image.height} -> {columns}x{rows} grid of {image_size}px tiles")
    overview.axis("off")
    for index, tile in enumerate(tiles[: columns * rows]):
        ax = figure.add_subplot(grid[index // columns, columns + 2 + index % columns])
        ax.imshow(tile)
        ax.set_title(f"tile {index + 1}", fontsize=8)
        ax.axis("off")
    if len(tiles) > columns * rows:
        ax = figure.add_subplot(grid[-1, columns + 1])
        ax.imshow(tiles[-1])
        ax.set_title("thumbnail", fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    return figure


def tiling_table(sizes, max_num: int, image_size: int, tokens_per_tile: int) -> list[dict]:
    """For each (width, height): the grid, tiles with thumbnail, and image tokens the LLM reads."""
    from .internvl.preprocessing import count_tiles

    rows = []
    for width, height in sizes:
        columns, grid_rows = choose_grid(width, height, 1, max_num, image_size)
        tiles = count_tiles(width, height, 1, max_num, image_size, use_thumbnail=True)
        rows.append({"image": f"{width}x{height}", "grid": f"{columns}x{grid_rows}", "tiles": tiles,
                     "image_tokens": tiles * tokens_per_tile})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table (for ``IPython.display.Markdown``)."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines)
