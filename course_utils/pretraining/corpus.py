"""The tiny base model's pretraining corpus: pictures of dishes with bilingual questions about what is drawn.

A real vision-language model is pretrained on captions and visual questions before anyone fine-tunes it; this
corpus is that stage in miniature. Every sample is one picture drawn by the synthetic FoodieQA's code
(:func:`course_utils.foodieqa.synthetic.draw_dish_picture`) and one question about it, in Chinese or English:

* a **description** of everything drawn: the rim's colour and pattern, the pieces (what, how many), the sauce,
  where the plate sits;
* an **open question** about one of those attributes, answered in a word;
* a **multiple-choice question** about one of them, answered with the option's letter, in the three forms the
  course asks in (lesson 03's options, the FoodieQA paper's Chinese and English prompts).

Like a real model, the corpus teaches general food knowledge, the ingredient and the cooking method (FoodieQA's
own wording of those two questions included), and never FoodieQA's regional knowledge: no cuisine, region or
dish name appears in it. Those are what lesson 04's fine-tuning adds. A sample is a pure function of
``(seed, index)``, so the corpus is endless, needs no disk, and the same seed gives the same samples; every
picture serves ``QUESTIONS_PER_PICTURE`` consecutive samples (drawing it costs more than training on it).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from ..foodieqa.layout import CHOICE_COUNT
from ..foodieqa.prompts import DISH_NAME_LINK, MCQ_INSTRUCTION, OPTION_LETTERS, format_options
from ..foodieqa.synthetic import CUISINES, INGREDIENTS, METHODS, QUESTIONS, Dish, PictureFacts, draw_dish_picture

# What a person calls each drawn thing, (Chinese, English); keyed as the synthetic FoodieQA draws them.
RIM_COLOURS = {
    (200, 30, 30): ("红色", "red"), (30, 80, 200): ("蓝色", "blue"), (0, 150, 150): ("青色", "teal"),
    (215, 170, 0): ("黄色", "yellow"), (140, 50, 170): ("紫色", "purple"), (230, 70, 170): ("粉色", "pink"),
}
RIM_PATTERNS = {
    "dots": ("圆点", "dots"), "rings": ("双圈", "rings"), "ticks": ("短线", "ticks"),
    "squares": ("方块", "squares"), "zigzag": ("锯齿", "zigzag"), "waves": ("波浪", "waves"),
}
# (measure word, Chinese piece name, English plural) of each main ingredient
PIECES = {
    "牛肉": ("片", "牛肉", "beef slices"), "虾": ("只", "虾", "shrimps"), "豆腐": ("块", "豆腐", "tofu cubes"),
    "西兰花": ("朵", "西兰花", "broccoli florets"), "面条": ("根", "面条", "noodles"), "鱼": ("条", "鱼", "fish"),
}
SAUCES = {  # cooking method -> (Chinese, English) of what lies under the pieces
    "红烧": ("深褐色的酱汁", "dark brown sauce"), "清蒸": ("浅绿色的汤汁", "light green broth"),
    "糖醋": ("橙色的酱汁", "orange sauce"), "干煸": ("没有酱汁，撒着香料", "no sauce, only spices"),
}
POSITIONS = {"left": ("左边", "on the left"), "centre": ("中间", "in the middle"), "right": ("右边", "on the right")}
PIECE_COUNTS = range(4, 10)

ATTRIBUTES = ("rim_colour", "rim_pattern", "ingredient", "method", "pieces", "position")
LANGUAGES = ("zh", "en")

# Open questions about one attribute, (Chinese, English). The ingredient and method questions include
# FoodieQA's own wording (its QUESTIONS), so the base model knows those two as a real model would.
_FOODIEQA = {kind: (zh, en) for kind, zh, en in QUESTIONS}
ATTRIBUTE_QUESTIONS = {
    "rim_colour": [("盘边是什么颜色？", "What colour is the plate's rim?")],
    "rim_pattern": [("盘边是什么花纹？", "What pattern is on the plate's rim?")],
    "ingredient": [_FOODIEQA["main-ingredient"], ("盘子里是什么食物？", "What food is on the plate?")],
    "method": [_FOODIEQA["cooking-skills"], ("这道菜是怎么做的？", "How was this dish made?")],
    "pieces": [("盘子里有几块食物？", "How many pieces of food are on the plate?")],
    "position": [("盘子在图片的什么位置？", "Where is the plate in the picture?")],
}
DESCRIBE_QUESTIONS = [("描述这张图片。", "Describe the image."), ("图片里有什么？", "What is in the picture?"),
                      ("请详细描述这盘菜。", "Describe this dish in detail.")]
# The reply's cue that ends the FoodieQA paper's prompts (evaluation.protocols.PAPER_PROMPTS): "…为（" / "… would be ("
PAPER_MCQ = {
    "zh": "{question} 选项有: {options}, 请根据上图从所提供的选项中选择一个正确答案，为（",
    "en": "{question} Here are the options: {options} If had to select one of the options, my answer would be (",
}
EN_MCQ_INSTRUCTION = "Answer with the option's letter."
TASKS = ("describe", "question", "choice")
TASK_WEIGHTS = (2, 2, 4)  # letters are the hardest skill for a small model: half the samples practise them
QUESTIONS_PER_PICTURE = 4


@dataclass(frozen=True)
class Sample:
    """One picture, one question about it and the answer the model learns; ``attribute`` None for descriptions."""

    picture: int  # which picture of the corpus (one serves QUESTIONS_PER_PICTURE samples)
    facts: PictureFacts
    image: object  # PIL.Image.Image
    question: str
    answer: str
    task: str
    attribute: str | None
    language: str


def attribute_value(facts: PictureFacts, attribute: str, language: str) -> str:
    """The name of one drawn attribute in ``language`` ("红色", "6", "braised", ...)."""
    k = LANGUAGES.index(language)
    dish = facts.dish
    if attribute == "rim_colour":
        return RIM_COLOURS[dish.cuisine.rim_colour][k]
    if attribute == "rim_pattern":
        return RIM_PATTERNS[dish.cuisine.rim_pattern][k]
    if attribute == "ingredient":
        return (dish.ingredient.name, dish.ingredient.name_en)[k]
    if attribute == "method":
        return (dish.method.name, dish.method.name_en)[k]
    if attribute == "pieces":
        return str(facts.pieces)
    if attribute == "position":
        return POSITIONS[facts.position][k]
    raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(ATTRIBUTES)}")


def attribute_options(attribute: str, language: str) -> list[str]:
    """Every value an attribute can take, in ``language``."""
    k = LANGUAGES.index(language)
    if attribute == "rim_colour":
        return [names[k] for names in RIM_COLOURS.values()]
    if attribute == "rim_pattern":
        return [names[k] for names in RIM_PATTERNS.values()]
    if attribute == "ingredient":
        return [(i.name, i.name_en)[k] for i in INGREDIENTS]
    if attribute == "method":
        return [(m.name, m.name_en)[k] for m in METHODS]
    if attribute == "pieces":
        return [str(n) for n in PIECE_COUNTS]
    if attribute == "position":
        return [names[k] for names in POSITIONS.values()]
    raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(ATTRIBUTES)}")


# The fixed words of the Chinese description (``describe``), for the tokenizer's vocabulary
DESCRIPTION_WORDS = ("一个白色的盘子", "盘边是", "的", "花纹", "盘子里有", "的做法", "盘子在图片的")


def describe(facts: PictureFacts, language: str) -> str:
    """The full description of a picture, one fixed sentence pattern per language."""
    dish = facts.dish
    colour, pattern = attribute_value(facts, "rim_colour", language), attribute_value(facts, "rim_pattern", language)
    position = attribute_value(facts, "position", language)
    if language == "zh":
        measure, piece, _ = PIECES[dish.ingredient.name]
        sauce = SAUCES[dish.method.name][0]
        return (f"一个白色的盘子，盘边是{colour}的{pattern}花纹。盘子里有{facts.pieces}{measure}{piece}，"
                f"{dish.method.name}的做法，{sauce}。盘子在图片的{position}。")
    _, _, pieces_en = PIECES[dish.ingredient.name]
    sauce = SAUCES[dish.method.name][1]
    return (f"A white plate with a {colour} rim patterned with {pattern}. On it are {facts.pieces} {pieces_en}, "
            f"{dish.method.name_en}, with {sauce}. The plate is {position} of the picture.")


# How each attribute is read back from a description (the inverse of ``describe``); lesson 01 and the
# base model's evaluation use it.
_DESCRIPTION_PATTERNS = {
    "zh": re.compile(r"盘边是(?P<rim_colour>\S+?)的(?P<rim_pattern>\S+?)花纹。盘子里有(?P<pieces>\d+)\S(?P<ingredient>\S+?)，"
                     r"(?P<method>\S+?)的做法，.*盘子在图片的(?P<position>\S+?)。"),
    "en": re.compile(r"with a (?P<rim_colour>\w+) rim patterned with (?P<rim_pattern>\w+)\. On it are (?P<pieces>\d+) "
                     r"(?P<ingredient>[\w ]+?), (?P<method>[\w-]+), with .*The plate is (?P<position>[\w ]+?) of the"),
}


def read_description(text: str, language: str) -> dict[str, str]:
    """The attributes a description names ({} for a reply that does not follow the pattern)."""
    match = _DESCRIPTION_PATTERNS[language].search(text)
    if not match:
        return {}
    found = match.groupdict()
    if language == "en":  # the description names the pieces ("beef slices"); the attribute is the ingredient
        by_plural = {plural: name_en for (_, _, plural), name_en in
                     zip(PIECES.values(), (i.name_en for i in INGREDIENTS))}
        found["ingredient"] = by_plural.get(found["ingredient"], found["ingredient"])
    return found


def choice_question(question: str, options: list[str], language: str, form: str) -> str:
    """A multiple-choice question in one of the course's forms: ``course`` (lesson 03's) or ``paper``."""
    if form == "paper":
        listed = "".join(f"（{letter}) {option}\n" for letter, option in zip(OPTION_LETTERS, options))
        return PAPER_MCQ[language].format(question=question, options=listed)
    instruction = MCQ_INSTRUCTION if language == "zh" else EN_MCQ_INSTRUCTION
    return f"{question}\n{format_options(options)}\n{instruction}"


@functools.lru_cache(maxsize=8)
def draw_picture(seed: int, picture: int):
    """(image, facts) of picture number ``picture`` of the corpus of ``seed``: a random dish, drawn."""
    rng = random.Random(f"{seed}:picture:{picture}")
    dish = Dish(0, rng.choice(CUISINES), rng.choice(INGREDIENTS), rng.choice(METHODS))
    return draw_dish_picture(dish, rng)


def draw_sample(seed: int, index: int, task: str | None = None, attribute: str | None = None,
                language: str | None = None) -> Sample:
    """Sample ``index`` of the corpus of ``seed``: its picture and one question (task, attribute and language drawn
    too unless given)."""
    picture = index // QUESTIONS_PER_PICTURE
    image, facts = draw_picture(seed, picture)
    rng = random.Random(f"{seed}:{index}")
    language = language or rng.choice(LANGUAGES)
    task = task or rng.choices(TASKS, weights=TASK_WEIGHTS)[0]
    k = LANGUAGES.index(language)
    if task == "describe":
        question = rng.choice(DESCRIBE_QUESTIONS)[k]
        return Sample(picture, facts, image, question, describe(facts, language), task, None, language)
    attribute = attribute or rng.choice(ATTRIBUTES)
    question = rng.choice(ATTRIBUTE_QUESTIONS[attribute])[k]
    right = attribute_value(facts, attribute, language)
    if task == "question":
        answer = f"{right}。" if language == "zh" else f"{right[0].upper()}{right[1:]}."
        return Sample(picture, facts, image, question, answer, task, attribute, language)
    others = [option for option in attribute_options(attribute, language) if option != right]
    options = rng.sample(others, min(CHOICE_COUNT - 1, len(others))) + [right]
    rng.shuffle(options)
    letter = OPTION_LETTERS[options.index(right)]
    form = rng.choice(("course", "paper"))
    # the paper's prompt ends with an open "(": the reply continues it with the letter and closes it
    answer = f"{letter})" if form == "paper" else letter
    return Sample(picture, facts, image, choice_question(question, options, language, form), answer, task, attribute, language)


def vocabulary_texts() -> list[str]:
    """Texts whose words the tokenizer's merges are learnt from: the corpus's words, and FoodieQA's answers.

    Words, not sentences: merges learnt from whole sentences fuse neighbouring words ("盘边是红色的圆点花纹" as one
    token), and a combination the sentences missed falls apart into pieces. The answers (cuisines, regions, dish
    names) never appear in the corpus, but fine-tuning teaches them: a real model's vocabulary holds such words
    whole, and a tiny model learns them far faster as whole tokens than as the byte pieces a byte-level tokenizer
    falls back to. Words are joined by punctuation, not spaces: from "a 川菜" the tokenizer would learn " 川菜".
    """
    words = list(DESCRIPTION_WORDS)
    words += [option for attribute in ATTRIBUTES for language in LANGUAGES
              for option in attribute_options(attribute, language)]
    words += [word for entry in PIECES.values() for word in entry] + [word for pair in SAUCES.values() for word in pair]
    words += [word for c in CUISINES for word in (c.name, c.region, c.dish_prefix, c.name_en, c.region_en, c.style_en)]
    words += [DISH_NAME_LINK.lstrip("，"), EN_MCQ_INSTRUCTION]
    questions = [question for pairs in ATTRIBUTE_QUESTIONS.values() for pair in pairs for question in pair]
    questions += [question for pair in DESCRIBE_QUESTIONS for question in pair]
    questions += [question for _, zh, en in QUESTIONS for question in (zh, en)]
    # English words are pre-tokenized at spaces, so whole sentences teach them without fusing neighbours
    english = [draw_sample(0, index * QUESTIONS_PER_PICTURE, task="describe", language="en").answer for index in range(12)]
    return ["，".join(words)] * 8 + questions + english + [MCQ_INSTRUCTION, PAPER_MCQ["zh"], PAPER_MCQ["en"]]
