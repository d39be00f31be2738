"""Lesson 02's checks accept the right answers and turn plausible wrong ones away with a hint."""

import pytest

from course_utils.exercises import find_check
from course_utils.exercises.lesson02 import finishing_steps
from course_utils.internvl import count_tiles


def test_image_tokens_count_the_thumbnail_and_this_models_tokens_per_tile(tiny_model_path):
    check = find_check("02.1")
    tiles = {n: count_tiles(800, 600, 1, n, 224) for n in (1, 6, 12)}
    assert tiles == {1: 1, 6: 7, 12: 13}  # 2x3 and 3x4 grids, each with a thumbnail
    assert check({n: count * 64 for n, count in tiles.items()}, model_path=tiny_model_path) is None  # 224 px, 14 px patches
    assert "thumbnail" in check({1: 64, 6: 6 * 64, 12: 12 * 64}, model_path=tiny_model_path)
    assert "InternVL2-2B's" in check({n: count * 256 for n, count in tiles.items()}, model_path=tiny_model_path)
    assert "a dict" in check([64, 448, 832], model_path=tiny_model_path)


def test_kv_bytes_per_token_need_lmdeploys_scales_and_zero_points(tiny_model_path):
    check = find_check("02.2")
    # the tiny base's LLM: 4 layers, 2 key-value heads of 192 / 4 = 48 numbers
    per_head = {0: 48 * 2, 8: 48 + 2 + 2, 4: 24 + 2 + 2}
    right = {policy: 2 * 4 * 2 * size for policy, size in per_head.items()}
    assert right == {0: 1536, 8: 832, 4: 448}
    assert check(right, model_path=tiny_model_path) is None
    assert "scale and a zero point" in check({0: 1536, 8: 768, 4: 384}, model_path=tiny_model_path)
    assert "not num_attention_heads" in check({0: 1536 * 2, 8: 832, 4: 448}, model_path=tiny_model_path)  # 4 heads
    assert "2 (keys and values) x layers" in check({0: 768, 8: 416, 4: 224}, model_path=tiny_model_path)


def test_finishing_steps_of_static_and_continuous_batching():
    assert finishing_steps([3, 12, 5, 8], 2, continuous=False) == [3, 12, 17, 20]
    assert finishing_steps([3, 12, 5, 8], 2, continuous=True) == [3, 12, 8, 16]
    assert finishing_steps([4, 4, 4], 3, continuous=True) == finishing_steps([4, 4, 4], 3, continuous=False)


def test_batching_by_hand_is_checked_against_both_schedules():
    check = find_check("02.3")
    lengths, slots = [3, 12, 5, 8], 2
    assert check({"static": [3, 12, 17, 20], "continuous": [3, 12, 8, 16]}, lengths=lengths, slots=slots) is None
    assert "swapped" in check({"static": [3, 12, 8, 16], "continuous": [3, 12, 17, 20]}, lengths=lengths, slots=slots)
    assert "longest of those" in check({"static": [3, 12, 8, 20], "continuous": [3, 12, 8, 16]}, lengths=lengths,
                                       slots=slots)
    assert "first slot to be free" in check({"static": [3, 12, 17, 20], "continuous": [3, 12, 8, 20]},
                                            lengths=lengths, slots=slots)


@pytest.mark.parametrize("host", ["localhost", "0.0.0.0", "my-laptop.local"])
def test_hosts_that_need_api_keys_are_checked_by_check_bind(host):
    check = find_check("02.4")
    right = {"127.0.0.1": False, "::1": False, "localhost": False, "0.0.0.0": True, "192.168.1.20": True,
             "my-laptop.local": True}
    assert check(right) is None
    hint = check(dict(right, **{host: not right[host]}))
    assert host in hint and "loopback" in hint
