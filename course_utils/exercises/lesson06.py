"""Checks of lesson 06's exercises: greedy answers, a panorama's tiles, forgetting, one model in both panes.

The checks that need an answer ask the playground's own engines again, greedily, about the picture and question
the playground holds (``play``: a :class:`course_utils.playground.Playground`).
"""

from __future__ import annotations

from . import exercise

PANORAMA_TILE_LIMITS = (1, 6, 12)


def greedy_answer(play, side: str, image=None, question: str | None = None) -> str:
    """What ``side``'s model answers at temperature 0, afresh (no conversation), with the playground's settings."""
    from ..engines import GenerationSettings

    model = play.sides[side]
    model.ensure_loaded(play.max_tiles.value)
    settings = GenerationSettings(max_new_tokens=play.max_new_tokens.value)
    question = (question or play.question.value).strip()
    return "".join(model.engine.stream(image or play.image, question, settings)).strip()


@exercise("06.1")
def greedy_repeats(answers, play, side: str = "base") -> str | None:
    if isinstance(answers, str) or len(answers) < 2:
        return "ask at least twice and pass the list of the answers"
    if len(set(answers)) > 1:
        return ("the answers differ, so they were sampled: set the temperature to 0 (play.temperature.value = 0.0) "
                "and ask again, pressing Clear before each ask")
    if answers[0] != greedy_answer(play, side):
        return (f"these are not the {side} model's greedy answer to the picture and question now in the playground: "
                "ask again at temperature 0, with Clear before each ask so that none is a follow-up")
    return None


@exercise("06.2")
def panorama_tiles(answer, image, info) -> str | None:
    from ..internvl.preprocessing import count_tiles

    if not isinstance(answer, dict) or set(answer) != set(PANORAMA_TILE_LIMITS):
        return "answer with a dict from each max tiles (1, 6, 12) to (tiles, image tokens)"
    for max_tiles in PANORAMA_TILE_LIMITS:
        tiles = count_tiles(image.width, image.height, info.min_tiles, max_tiles, info.image_size, info.use_thumbnail)
        given_tiles, given_tokens = answer[max_tiles]
        if given_tiles != tiles:
            if given_tiles == tiles - 1 and tiles > 1:
                return f"max tiles {max_tiles}: a thumbnail of the whole picture is added once it has several tiles"
            return (f"max tiles {max_tiles}: the grid is the one closest to the picture's shape, at most "
                    f"{max_tiles} tiles (playground.tile_preview counts them)")
        if given_tokens != tiles * info.tokens_per_tile:
            return f"max tiles {max_tiles}: every tile becomes {info.tokens_per_tile} image tokens"
    return None


@exercise("06.3")
def described_gallery_pictures(answer, play, pictures=None) -> str | None:
    """``pictures``: the gallery items asked about (all of the playground's gallery by default)."""
    from ..playground import DESCRIBE_QUESTION, open_image
    from ..pretraining.corpus import read_description

    with_model = {side for side, model in play.sides.items() if model.info is not None}
    if not isinstance(answer, dict) or set(answer) != with_model:
        return f"answer with a dict from each pane with a model ({', '.join(sorted(with_model))}) to its count"
    images = [open_image(item.image)[0] for item in (play.gallery_items if pictures is None else pictures)]
    truth = {side: sum(bool(read_description(greedy_answer(play, side, image, DESCRIBE_QUESTION), "zh"))
                       for image in images) for side in with_model}
    if answer == truth:
        return None
    if any(count > len(images) for count in answer.values()):
        return f"count pictures, not answers or names: there are {len(images)} pictures"
    return (f"ask {DESCRIBE_QUESTION} afresh about each picture at temperature 0 (a new picture starts a new "
            "conversation) and count the answers in which read_description(answer, 'zh') finds anything")


@exercise("06.4")
def one_model_in_both_panes(answer, play) -> str | None:
    if answer == greedy_answer(play, "base"):
        return None
    right, left = play.sides["finetuned"].info, play.sides["base"].info
    if right is None or right.path != left.path:
        return "the right pane still uses another model: choose the base model in its list, then ask again"
    return ("this is not the base model's greedy answer to the picture and question now in the playground: ask "
            "again at temperature 0, after Clear")
