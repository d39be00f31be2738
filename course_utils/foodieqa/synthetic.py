"""A synthetic FoodieQA: the real release's layout and ``sivqa_tidy.json`` schema, with dishes drawn by PIL.

The real dataset is gated, large for a CPU, and licensed for non-commercial use only, so the course runs by
default on this stand-in. Its pictures follow visible rules, so that a small model fine-tuned on some dishes
can answer for dishes it never saw:

* the **cuisine** (and so the **region**) is shown by the plate: rim colour and rim pattern;
* the **main ingredient** by the shape and colour of the food pieces;
* the **cooking method** by the sauce under them.

A dish is one (cuisine, ingredient, method) combination; held-out dishes are new combinations of seen parts.
Everything else varies per picture (size, background, plate position and size, piece count, placement and
rotation, lighting, noise) and carries no answer. The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..outputs import check_output, staged_output
from .layout import CHOICE_COUNT, IMAGES_DIR, SIVQA_FILE

RGB = tuple[int, int, int]
SYNTHETIC_KIND = "synthetic-foodieqa"  # the outputs marker's kind


@dataclass(frozen=True)
class Cuisine:
    name: str  # as in food_meta.food_type
    name_en: str
    dish_prefix: str  # prefix of the dish names, e.g. 川味
    style_en: str
    region: str
    region_en: str
    rim_colour: RGB
    rim_pattern: str


@dataclass(frozen=True)
class Ingredient:
    name: str
    name_en: str
    colour: RGB
    shape: str


@dataclass(frozen=True)
class Method:
    name: str
    name_en: str
    sauce_colour: RGB | None  # None: dry, no sauce pool


CUISINES = (
    Cuisine("川菜", "Sichuan cuisine", "川味", "Sichuan-style", "四川", "Sichuan", (200, 30, 30), "dots"),
    Cuisine("粤菜", "Cantonese cuisine", "粤式", "Cantonese-style", "广东", "Guangdong", (30, 80, 200), "rings"),
    Cuisine("鲁菜", "Shandong cuisine", "鲁式", "Shandong-style", "山东", "Shandong", (0, 150, 150), "ticks"),
    Cuisine("东北菜", "Northeastern cuisine", "东北", "Northeastern", "黑龙江", "Heilongjiang", (215, 170, 0), "squares"),
    Cuisine("新疆菜", "Xinjiang cuisine", "新疆", "Xinjiang-style", "新疆", "Xinjiang", (140, 50, 170), "zigzag"),
    Cuisine("湘菜", "Hunan cuisine", "湘味", "Hunan-style", "湖南", "Hunan", (230, 70, 170), "waves"),
)
INGREDIENTS = (
    Ingredient("牛肉", "beef", (165, 95, 85), "slices"),
    Ingredient("虾", "shrimp", (250, 135, 90), "curls"),
    Ingredient("豆腐", "tofu", (215, 165, 90), "cubes"),
    Ingredient("西兰花", "broccoli", (50, 150, 40), "florets"),
    Ingredient("面条", "noodles", (250, 225, 120), "strands"),
    Ingredient("鱼", "fish", (150, 165, 190), "fish"),
)
METHODS = (
    Method("红烧", "braised", (105, 40, 30)),
    Method("清蒸", "steamed", (190, 225, 130)),
    Method("糖醋", "sweet-and-sour", (250, 120, 0)),
    Method("干煸", "dry-fried", None),
)

# (question_type, Chinese question, English question); the answer of each follows from one visible rule.
QUESTIONS = (
    ("cuisine_type", "图片中的食物通常属于哪个菜系？",
     "Which cuisine does the food in the image usually belong to?"),
    ("main-ingredient", "图片中的食物的主要食材是什么？", "What is the main ingredient of the food in the image?"),
    ("region", "图片中的食物最可能来自哪个地区？", "Which region does the food in the image most likely come from?"),
    ("cooking-skills", "图片中的食物是用什么方法烹饪的？", "How was the food in the image cooked?"),
)
# Picture sizes: small enough for a CPU, several aspect ratios so that InternVL's tiling differs per image.
IMAGE_SIZES = ((448, 448), (448, 336), (336, 448), (448, 224), (320, 320), (256, 256), (384, 288), (288, 384))
BACKGROUNDS: tuple[RGB, ...] = ((95, 75, 110), (120, 120, 125), (215, 200, 170), (55, 85, 65), (70, 90, 130))
LOCATIONS = ("餐馆", "家里", "食堂")
PLATE_WHITE: RGB = (246, 244, 238)
DRY_FLAKES: tuple[RGB, RGB] = ((50, 30, 20), (235, 215, 160))  # dark spice and sesame, for dishes without sauce


@dataclass(frozen=True)
class Dish:
    id: int
    cuisine: Cuisine
    ingredient: Ingredient
    method: Method

    @property
    def name(self) -> str:
        return f"{self.cuisine.dish_prefix}{self.method.name}{self.ingredient.name}"

    @property
    def name_en(self) -> str:
        return f"{self.cuisine.style_en} {self.method.name_en} {self.ingredient.name_en}"


def max_dishes() -> int:
    """How many distinct dishes the rules allow (every cuisine × ingredient × method)."""
    return len(CUISINES) * len(INGREDIENTS) * len(METHODS)


def draw_dishes(count: int, rng: random.Random) -> list[Dish]:
    """``count`` distinct dishes, cuisines taken in turn so that every cuisine has about as many dishes."""
    if not 1 <= count <= max_dishes():
        raise ValueError(f"dishes must be between 1 and {max_dishes()}, got {count}")
    combos = {c.name: [(i, m) for i in INGREDIENTS for m in METHODS] for c in CUISINES}
    for options in combos.values():
        rng.shuffle(options)
    dishes = []
    for index in range(count):
        cuisine = CUISINES[index % len(CUISINES)]
        ingredient, method = combos[cuisine.name].pop()
        dishes.append(Dish(index + 1, cuisine, ingredient, method))
    return dishes


# ----------------------------------------------------------------------------------------------- drawing
def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(max(0, min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def _rotate(points: list[tuple[float, float]], angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """Points given around the origin, rotated by ``angle`` and moved to (cx, cy)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _ring_point(cx: float, cy: float, radius: float, angle: float) -> tuple[float, float]:
    return cx + radius * math.cos(angle), cy + radius * math.sin(angle)


def _rectangle(half_width: float, half_height: float) -> list[tuple[float, float]]:
    w, h = half_width, half_height
    return [(-w, -h), (w, -h), (w, h), (-w, h)]


def _oval(rx: float, ry: float, points: int = 14, dx: float = 0, dy: float = 0) -> list[tuple[float, float]]:
    angles = np.linspace(0, 2 * math.pi, points, endpoint=False)
    return [(dx + rx * math.cos(t), dy + ry * math.sin(t)) for t in angles]


def draw_plate(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, cuisine: Cuisine, rng: random.Random):
    """A white plate whose rim colour and pattern tell the cuisine."""
    colour, start, line_width = cuisine.rim_colour, rng.uniform(0, 2 * math.pi), max(2, round(r * 0.03))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=PLATE_WHITE, outline=colour, width=line_width)
    draw.ellipse((cx - 0.78 * r, cy - 0.78 * r, cx + 0.78 * r, cy + 0.78 * r), outline=(225, 222, 215), width=2)
    band = 0.89 * r  # middle of the rim band
    if cuisine.rim_pattern == "dots":
        for k in range(14):
            x, y = _ring_point(cx, cy, band, start + k * 2 * math.pi / 14)
            draw.ellipse((x - 0.05 * r, y - 0.05 * r, x + 0.05 * r, y + 0.05 * r), fill=colour)
    elif cuisine.rim_pattern == "rings":
        for radius in (0.83 * r, 0.95 * r):
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=colour, width=line_width)
    elif cuisine.rim_pattern == "ticks":
        for k in range(28):
            angle = start + k * 2 * math.pi / 28
            tick = [_ring_point(cx, cy, 0.81 * r, angle), _ring_point(cx, cy, 0.97 * r, angle)]
            draw.line(tick, fill=colour, width=line_width)
    elif cuisine.rim_pattern == "squares":
        for k in range(0, 16, 2):
            angle = start + k * 2 * math.pi / 16
            draw.polygon(_rotate(_rectangle(0.06 * r, 0.06 * r), angle, *_ring_point(cx, cy, band, angle)), fill=colour)
    elif cuisine.rim_pattern == "zigzag":
        points = [_ring_point(cx, cy, (0.82 if k % 2 else 0.96) * r, start + k * 2 * math.pi / 36) for k in range(37)]
        draw.line(points, fill=colour, width=line_width)
    elif cuisine.rim_pattern == "waves":
        points = [_ring_point(cx, cy, band + 0.06 * r * math.sin(8 * t), start + t)
                  for t in np.linspace(0, 2 * math.pi, 160)]
        draw.line(points, fill=colour, width=line_width)
    else:
        raise ValueError(f"unknown rim pattern {cuisine.rim_pattern!r}")


def draw_sauce(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, method: Method, rng: random.Random):
    """The sauce pool (or, for a dry dish, scattered flakes) that tells the cooking method."""
    if method.sauce_colour is None:
        for _ in range(40):
            x, y = _ring_point(cx, cy, rng.uniform(0, 0.68) * r, rng.uniform(0, 2 * math.pi))
            size = rng.uniform(0.015, 0.03) * r
            flake = DRY_FLAKES[0] if rng.random() < 0.7 else DRY_FLAKES[1]
            draw.ellipse((x - size, y - size, x + size, y + size), fill=flake)
        return
    outline = [_ring_point(cx, cy, r * 0.66 * rng.uniform(0.85, 1.0), k * 2 * math.pi / 14) for k in range(14)]
    draw.polygon(outline, fill=method.sauce_colour)


def piece_outline(shape: str, size: float) -> list[list[tuple[float, float]]]:
    """Polygons (around the origin, unrotated) of one food piece; a piece may be several polygons."""
    if shape == "slices":
        return [_rectangle(1.1 * size, 0.4 * size)]
    if shape == "cubes":
        return [_rectangle(0.6 * size, 0.6 * size)]
    if shape == "curls":  # a thick C, like a cooked shrimp
        arc = np.linspace(0.2 * math.pi, 1.8 * math.pi, 14)
        outer = [(size * math.cos(t), size * math.sin(t)) for t in arc]
        inner = [(0.5 * size * math.cos(t), 0.5 * size * math.sin(t)) for t in arc[::-1]]
        return [outer + inner]
    if shape == "florets":  # three round heads over a stem
        stem = [(x, y + 0.5 * size) for x, y in _rectangle(0.15 * size, 0.4 * size)]
        centres = ((-0.35, -0.1), (0.35, -0.1), (0, -0.45))
        heads = [_oval(0.42 * size, 0.42 * size, 12, dx * size, dy * size) for dx, dy in centres]
        return [stem, *heads]
    if shape == "fish":  # an oval body and a tail
        body = _oval(1.1 * size, 0.45 * size, 18)
        tail = [(0.9 * size, 0), (1.5 * size, -0.45 * size), (1.5 * size, 0.45 * size)]
        return [body, tail]
    raise ValueError(f"unknown piece shape {shape!r}")


def draw_piece(draw: ImageDraw.ImageDraw, x: float, y: float, size: float, angle: float, ingredient: Ingredient):
    """One food piece whose shape and colour tell the main ingredient."""
    edge = _shade(ingredient.colour, 0.7)
    if ingredient.shape == "strands":  # a wavy noodle
        points = [(t * size, 0.25 * size * math.sin(3 * t)) for t in np.linspace(-1.4, 1.4, 16)]
        draw.line(_rotate(points, angle, x, y), fill=ingredient.colour, width=max(3, round(size * 0.22)))
        return
    for polygon in piece_outline(ingredient.shape, size):
        draw.polygon(_rotate(polygon, angle, x, y), fill=ingredient.colour, outline=edge)


@dataclass(frozen=True)
class PictureFacts:
    """What one picture shows beyond its dish: how many pieces, and where the plate sits."""

    dish: Dish
    pieces: int
    position: str  # "left", "centre" or "right": the plate's centre against the picture's width


def plate_position(cx: float, width: int) -> str:
    """Where a plate centred at ``cx`` sits, as a person would say it: off by more than a tenth of the width."""
    offset = (cx - width / 2) / width
    return "left" if offset < -0.1 else "right" if offset > 0.1 else "centre"


def draw_dish_image(dish: Dish, rng: random.Random) -> Image.Image:
    """One photo-like picture of a dish; only plate rim, pieces and sauce depend on the dish."""
    return draw_dish_picture(dish, rng)[0]


def draw_dish_picture(dish: Dish, rng: random.Random) -> tuple[Image.Image, PictureFacts]:
    """A picture of a dish and the facts it shows (the pretraining corpus describes them)."""
    width, height = rng.choice(IMAGE_SIZES)
    image = Image.new("RGB", (width, height), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    table = image.getpixel((0, 0))
    for _ in range(rng.randint(0, 6)):  # table grain: lines that carry no answer
        y = rng.uniform(0, height)
        draw.line([(0, y), (width, y + rng.uniform(-20, 20))], fill=_shade(table, rng.uniform(0.8, 1.15)), width=2)
    r = min(width, height) * rng.uniform(0.38, 0.47)
    cx = width / 2 + rng.uniform(-1, 1) * (width / 2 - r)
    cy = height / 2 + rng.uniform(-1, 1) * (height / 2 - r)
    draw_plate(draw, cx, cy, r, dish.cuisine, rng)
    draw_sauce(draw, cx, cy, r, dish.method, rng)
    pieces = rng.randint(4, 9)
    for _ in range(pieces):
        x, y = _ring_point(cx, cy, rng.uniform(0, 0.5) * r, rng.uniform(0, 2 * math.pi))
        draw_piece(draw, x, y, r * rng.uniform(0.13, 0.18), rng.uniform(0, 2 * math.pi), dish.ingredient)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.92, 1.08)  # lighting
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    return image, PictureFacts(dish, pieces, plate_position(cx, width))


# ----------------------------------------------------------------------------------------------- questions
def _question_facts(dish: Dish, question_type: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(right answer, its English, every (option, English) of the category) for one question type."""
    if question_type == "cuisine_type":
        return dish.cuisine.name, dish.cuisine.name_en, [(c.name, c.name_en) for c in CUISINES]
    if question_type == "main-ingredient":
        return dish.ingredient.name, dish.ingredient.name_en, [(i.name, i.name_en) for i in INGREDIENTS]
    if question_type == "region":
        return dish.cuisine.region, dish.cuisine.region_en, [(c.region, c.region_en) for c in CUISINES]
    if question_type == "cooking-skills":
        return dish.method.name, dish.method.name_en, [(m.name, m.name_en) for m in METHODS]
    raise ValueError(f"unknown question type {question_type!r}")


def make_question(
    dish: Dish, question_type: str, answer_position: int, question_id: str, food_meta: dict, rng: random.Random
) -> dict:
    """A question in FoodieQA's schema and key order; distractors come from the same category."""
    _, question, question_en = next(q for q in QUESTIONS if q[0] == question_type)
    right, right_en, options = _question_facts(dish, question_type)
    distractors = rng.sample([o for o in options if o[0] != right], CHOICE_COUNT - 1)
    choices = distractors[:answer_position] + [(right, right_en)] + distractors[answer_position:]
    return {
        "question": question,
        "choices": [zh for zh, _ in choices],
        "answer": str(answer_position),
        "question_type": question_type,
        "food_name": dish.name,
        "question_id": question_id,
        "food_meta": dict(food_meta),
        "question_en": question_en,
        "choices_en": [en for _, en in choices],
    }


def balanced_positions(count: int, rng: random.Random) -> list[int]:
    """Answer positions: every block of four holds 0..3 once, in random order, so A-D are equally often right."""
    positions: list[int] = []
    while len(positions) < count:
        block = list(range(CHOICE_COUNT))
        rng.shuffle(block)
        positions.extend(block)
    return positions[:count]


def describe_rules() -> str:
    """A Markdown table of the visual rules, written next to the data for learners."""
    lines = ["# Synthetic FoodieQA: the visual rules", "", "| cuisine (region) | plate rim |", "| --- | --- |"]
    lines += [f"| {c.name} ({c.region}) | {c.rim_pattern}, RGB{c.rim_colour} |" for c in CUISINES]
    lines += ["", "| main ingredient | pieces |", "| --- | --- |"]
    lines += [f"| {i.name} ({i.name_en}) | {i.shape}, RGB{i.colour} |" for i in INGREDIENTS]
    lines += ["", "| cooking method | sauce |", "| --- | --- |"]
    lines += [f"| {m.name} ({m.name_en}) | {f'RGB{m.sauce_colour}' if m.sauce_colour else 'no sauce; flakes'} |"
              for m in METHODS]
    return "\n".join(lines) + "\n"


def make_synthetic_foodieqa(
    out: str | Path, dishes: int = 40, seed: int = 0, images_per_dish: int = 3, force: bool = False
) -> Path:
    """Write a synthetic FoodieQA folder (``images/``, ``sivqa_tidy.json``, ``RULES.md``) and return its path.

    Each dish gets ``images_per_dish`` pictures and every picture one question of each type. The folder appears
    only when complete (see :mod:`course_utils.outputs`); a folder the course did not make, such as a real
    FoodieQA, is refused unless ``force``.
    """
    from tqdm.auto import tqdm

    if images_per_dish < 1:
        raise ValueError(f"images per dish must be at least 1, got {images_per_dish}: a dish needs a picture")
    rng = random.Random(seed)
    dish_list = draw_dishes(dishes, rng)  # refuses an impossible dish count
    out = check_output(out, SYNTHETIC_KIND, force=force)
    positions = iter(balanced_positions(dishes * images_per_dish * len(QUESTIONS), rng))
    records = []
    with staged_output(out, SYNTHETIC_KIND, force=force) as staging:
        (staging / IMAGES_DIR).mkdir()
        for dish in tqdm(dish_list, desc="drawing synthetic dishes", unit="dish"):
            for k in range(images_per_dish):
                food_file = f"{IMAGES_DIR}/{dish.id:03d}_{k}.jpg"
                draw_dish_image(dish, rng).save(staging / food_file, quality=90)
                food_meta = {
                    "main_ingredient": [dish.ingredient.name],
                    "id": dish.id,
                    "food_name": dish.name,
                    "food_type": dish.cuisine.name,
                    "food_location": rng.choice(LOCATIONS),
                    "food_file": food_file,
                }
                for question_type, _, _ in QUESTIONS:
                    question_id = f"vqa-{len(records)}"
                    records.append(make_question(dish, question_type, next(positions), question_id, food_meta, rng))
        (staging / SIVQA_FILE).write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
        (staging / "RULES.md").write_text(describe_rules(), encoding="utf-8")
    return out
