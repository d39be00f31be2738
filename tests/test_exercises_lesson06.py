"""Lesson 06's exercise checks accept the right answer and answer a plausible wrong one with its hint, on a
playground of the tiny base and another model (other random weights) as the fine-tuned one."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from course_utils import playground as pg
from course_utils.engines import load_engine
from course_utils.exercises import find_check
from course_utils.pretraining.corpus import read_description


def load_transformers(model_path, **options):
    return load_engine(model_path, backend="transformers", **options)


@pytest.fixture(scope="module")
def play(tiny_model_path, tmp_path_factory, session_run_dir):
    from course_utils.foodieqa import ensure_prepared_foodieqa
    from course_utils.tiny_model import build_model_dir

    other = build_model_dir(tmp_path_factory.mktemp("models") / "other-internvl2", seed=1)
    gallery = pg.held_out_gallery(ensure_prepared_foodieqa(), limit=2)
    playground = pg.Playground(tiny_model_path, None, gallery, load=load_transformers)
    playground.add_model_folder(other, side="finetuned")
    playground.max_new_tokens.value = 32
    yield playground
    playground.close()


def ask_afresh(play) -> dict[str, str]:
    play.clear()
    assert play.ask(wait=True)
    return {side: play.sides[side].history[-1][1] for side in pg.SIDES}


def test_06_1_greedy_answers_repeat(play):
    play.pick_gallery(0)
    play.temperature.value = 0.0
    answers = [ask_afresh(play)["base"] for _ in range(2)]
    check = find_check("06.1")
    assert check(answers, play=play) is None
    assert "sampled" in check([answers[0], answers[0] + "!"], play=play)
    other_models = ask_afresh(play)["finetuned"]
    assert "not the base model's greedy answer" in check([other_models] * 2, play=play)


def test_06_2_counts_a_panoramas_tiles_and_tokens():
    info = pg.ModelInfo(path=Path("."), image_size=224, tokens_per_tile=64, max_tiles=1, min_tiles=1,
                        use_thumbnail=True)
    wide = Image.new("RGB", (1344, 448))  # 6 x 2 tiles of 224 px, exactly
    # worked out by hand: 1 tile; 3 x 1 (ratio 3) + thumbnail; 6 x 2 (ratio 3, the picture fills it) + thumbnail
    right = {1: (1, 64), 6: (4, 4 * 64), 12: (13, 13 * 64)}
    check = find_check("06.2")
    assert check(right, image=wide, info=info) is None
    assert "thumbnail" in check({**right, 6: (3, 3 * 64)}, image=wide, info=info)
    assert "64 image tokens" in check({**right, 12: (13, 13 * 256)}, image=wide, info=info)


def test_06_3_counts_the_descriptions_of_each_model(play):
    play.temperature.value = 0.0
    play.question.value = pg.DESCRIBE_QUESTION
    described = []  # per gallery picture: which panes' answers read as a description
    for item in play.gallery_items:
        play.pick_image(item.image)
        described.append({side: bool(read_description(answer, "zh")) for side, answer in ask_afresh(play).items()})
    right = {side: sum(picture[side] for picture in described) for side in pg.SIDES}
    assert right["base"] > right["finetuned"]  # the base describes; random weights do not
    check = find_check("06.3")
    assert check(right, play=play) is None
    assert "anything" in check({"base": right["finetuned"], "finetuned": right["base"]}, play=play)
    assert "there are 2 pictures" in check({"base": 10, "finetuned": 0}, play=play)
    first_only = {side: int(described[0][side]) for side in pg.SIDES}
    assert check(first_only, play=play, pictures=play.gallery_items[:1]) is None


def test_06_4_one_model_in_both_panes_answers_alike(play):
    play.temperature.value = 0.0
    play.pick_gallery(0)
    check = find_check("06.4")
    assert "still uses another model" in check(ask_afresh(play)["finetuned"], play=play)
    play.model_lists["finetuned"].value = play.model_lists["base"].value
    answers = ask_afresh(play)
    assert answers["finetuned"] == answers["base"]
    assert check(answers["finetuned"], play=play) is None
