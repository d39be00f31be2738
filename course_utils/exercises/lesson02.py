"""Lesson 02's exercises: image tokens per photo, the KV cache's bytes per token under LMDeploy's quant_policy,
static against continuous batching worked out by hand, and which servers must have API keys."""

from __future__ import annotations

import heapq
import json
from pathlib import Path

from . import exercise

EXERCISE_PHOTO_SIZE = (800, 600)  # FoodieQA's photos
TILE_LIMITS = (1, 6, 12)


def _model_config(model_path) -> dict:
    return json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))


def _wrong_keys(answer, keys) -> str | None:
    if not isinstance(answer, dict) or set(answer) != set(keys):
        return f"answer with a dict whose keys are {', '.join(map(repr, keys))}"
    return None


@exercise("02.1")
def image_tokens_of_a_photo(answer, model_path) -> str | None:
    """``answer``: {max_dynamic_patch: image tokens of an 800x600 photo} for 1, 6 and 12. The truth tiles a real
    800x600 picture with the course's preprocessing and counts ``num_image_token`` tokens per tile."""
    from PIL import Image

    from ..internvl import dynamic_preprocess

    if problem := _wrong_keys(answer, TILE_LIMITS):
        return problem
    config = _model_config(model_path)
    image_size = config.get("force_image_size") or config["vision_config"]["image_size"]
    patches = (image_size // config["vision_config"]["patch_size"]) ** 2
    per_tile = int(patches * config["downsample_ratio"] ** 2)
    photo = Image.new("RGB", EXERCISE_PHOTO_SIZE)
    tiles = {n: len(dynamic_preprocess(photo, config["min_dynamic_patch"], n, image_size, config["use_thumbnail"]))
             for n in TILE_LIMITS}
    if answer == {n: tiles[n] * per_tile for n in TILE_LIMITS}:
        return None
    if answer == {n: (tiles[n] - (tiles[n] > 1)) * per_tile for n in TILE_LIMITS}:
        return "with more than one tile the model also sees a thumbnail of the whole photo: one tile more"
    if answer == {n: tiles[n] * 256 for n in TILE_LIMITS}:
        return f"256 tokens a tile is InternVL2-2B's; this model's tiles are {per_tile} tokens each"
    return ("tiles: count_tiles(800, 600, min_dynamic_patch, max_dynamic_patch, image_size, use_thumbnail); tokens "
            "per tile: (image_size / patch_size)^2 patches, of which pixel shuffle keeps downsample_ratio^2")


@exercise("02.2")
def kv_bytes_per_token(answer, model_path) -> str | None:
    """``answer``: {quant_policy: bytes of one token's keys and values} for 0, 8 and 4, on ``model_path``'s LLM.
    The truth is the course's ``LLMShape.bytes_per_token``, which equals LMDeploy's own block size."""
    from ..engines.kv_cache import QUANT_POLICIES, LLMShape

    if problem := _wrong_keys(answer, QUANT_POLICIES):
        return problem
    shape = LLMShape.from_model_dir(model_path)
    truth = {policy: shape.bytes_per_token(quant_policy=policy) for policy in QUANT_POLICIES}
    if answer == truth:
        return None
    if answer[0] != truth[0]:
        heads = _model_config(model_path)["llm_config"]["num_attention_heads"]
        if answer[0] * shape.kv_heads == truth[0] * heads:
            return ("keys and values are kept per key-value head: count num_key_value_heads (InternLM2's query "
                    "heads share them), not num_attention_heads")
        return ("quant_policy 0: 2 (keys and values) x layers x key-value heads x head_dim x 2 bytes, with "
                "head_dim = hidden_size / num_attention_heads")
    plain = {8: truth[0] // 2, 4: truth[0] // 4}
    if all(answer[policy] == plain[policy] for policy in (8, 4)):
        return ("LMDeploy also keeps, for each token's key and value in each head, a scale and a zero point of "
                "2 bytes each beside the integers")
    return "8 bits is one byte a number and 4 bits half a byte; add the scale and zero point (2 + 2 bytes) per head"


def finishing_steps(lengths, slots, continuous) -> list[int]:
    """The step at which each request's answer is complete when ``slots`` requests decode together, one token a
    step, every request waiting at step 0 in order. Static: a group of ``slots`` starts once the whole previous
    group is done. Continuous: a request starts in the first slot to be free."""
    if continuous:
        free_at = [0] * slots  # a heap of the steps at which the slots are free again
        ends = []
        for length in lengths:
            ends.append(heapq.heappop(free_at) + length)
            heapq.heappush(free_at, ends[-1])
        return ends
    ends, group_start = [], 0
    for first in range(0, len(lengths), slots):
        group = [group_start + length for length in lengths[first:first + slots]]
        ends += group
        group_start = max(group)
    return ends


@exercise("02.3")
def batching_by_hand(answer, lengths, slots) -> str | None:
    """``answer``: {"static": [step each answer is complete], "continuous": [...]} for ``lengths`` on ``slots``."""
    if problem := _wrong_keys(answer, ("static", "continuous")):
        return problem
    truth = {name: finishing_steps(lengths, slots, name == "continuous") for name in ("static", "continuous")}
    answer = {name: list(steps) for name, steps in answer.items()}
    if answer == truth:
        return None
    if answer["static"] == truth["continuous"] or answer["continuous"] == truth["static"]:
        return ("static and continuous are swapped: in static batching a new group waits until the longest answer "
                "of the group before it is done")
    if answer["static"] != truth["static"]:
        return (f"static: the first {slots} requests start at step 0; the next {slots} start when the longest of "
                "those is done, and so on")
    return "continuous: each waiting request takes the first slot to be free, the moment it is free"


@exercise("02.4")
def hosts_that_need_api_keys(answer) -> str | None:
    """``answer``: {host: whether serve_openai demands API keys there}. The truth asks ``check_bind`` itself."""
    from ..engines.serving import check_bind

    if not isinstance(answer, dict) or not answer:
        return "answer with a dict {host: True or False}"
    wrong = []
    for host, needs_keys in answer.items():
        try:
            check_bind(host, None)
            demanded = False
        except ValueError:
            demanded = True
        if needs_keys != demanded:
            wrong.append(host)
    if not wrong:
        return None
    return (f"not right for {', '.join(wrong)}: only addresses of this machine's loopback interface (127.x.x.x, ::1, "
            "and the name localhost) are unreachable from the network; 0.0.0.0 means every address, and any other "
            "host name may resolve to a public one")
