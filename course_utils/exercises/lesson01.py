"""Checks of lesson 01's exercises (tiling cost, a stronger pixel shuffle, the design patterns on a bigger
picture, InternVL2-8B's LLM counted by hand). Each recomputes the right answer with the course's code from what
the exercise's setup cell gives it."""

from __future__ import annotations

import torch

from . import exercise


@exercise("01.1")
def phone_photo_cost(answer, photo, tile_size, tokens_per_tile, max_nums) -> str | None:
    """``answer``: {max_num: image tokens} for a ``photo`` (width, height) at each ``max_num``."""
    from ..internvl.preprocessing import choose_grid, count_tiles

    if not isinstance(answer, dict) or set(answer) != set(max_nums):
        return f"give a dict with one entry per max_num, {{max_num: image tokens}} for max_num in {tuple(max_nums)}"
    for max_num in max_nums:
        tiles = count_tiles(*photo, 1, max_num, tile_size)
        if answer[max_num] == tiles * tokens_per_tile:
            continue
        columns, rows = choose_grid(*photo, 1, max_num, tile_size)
        if answer[max_num] == columns * rows * tokens_per_tile and tiles > columns * rows:
            return (f"max_num={max_num}: the {columns}x{rows} grid is right, but a photo cut into more than one "
                    "tile also gets a thumbnail of the whole photo, one more tile")
        if answer[max_num] == tiles:
            return f"max_num={max_num}: that is the number of tiles; every tile costs {tokens_per_tile} tokens"
        return (f"max_num={max_num}: choose_grid(...) gives the grid, count_tiles(...) the tiles with the thumbnail; "
                f"then {tokens_per_tile} tokens per tile")
    return None


@exercise("01.2")
def stronger_squeeze(answer, grid, vision_config, scale_factor=0.25) -> str | None:
    """``answer``: {"shape": pixel_shuffle(grid)'s shape, "tokens_per_tile": ..., "mlp1_input": ...} at
    ``scale_factor`` for InternViT's ``vision_config``."""
    from ..internvl import pixel_shuffle

    keys = {"shape", "tokens_per_tile", "mlp1_input"}
    if not isinstance(answer, dict) or set(answer) != keys:
        return f"give a dict with the keys {sorted(keys)}"
    folded = 1 / scale_factor**2  # patches folded into one position
    if tuple(answer["shape"]) != tuple(pixel_shuffle(grid, scale_factor=scale_factor).shape):
        return "run pixel_shuffle(grid, scale_factor=...) and read .shape: (batch, width, height, channels)"
    side = vision_config.image_size // vision_config.patch_size
    if answer["tokens_per_tile"] != int(side * scale_factor) ** 2:
        return (f"a {vision_config.image_size}-px tile is a {side}x{side} grid of patches; a scale of "
                f"{scale_factor} keeps that fraction of each side, so 1/{folded:.0f} of the patches")
    if answer["mlp1_input"] != vision_config.hidden_size * folded:
        return (f"each position now holds {folded:.0f} patches' vectors side by side: {folded:.0f} x the ViT's "
                f"width ({vision_config.hidden_size})")
    return None


@exercise("01.3")
def bigger_picture(answer, image, text_ids) -> str | None:
    """``answer``: {pattern: length of the sequence its decoder reads} for ``image`` and ``text_ids``."""
    from ..architectures import DESIGN_PATTERNS

    if not isinstance(answer, dict) or set(answer) != set(DESIGN_PATTERNS):
        return f"give a dict with one decoder length per pattern: {list(DESIGN_PATTERNS)}"
    wrong = []
    with torch.no_grad():
        for name, (module_class, _, _) in DESIGN_PATTERNS.items():
            logits, _ = module_class().eval()(image, text_ids)
            if answer[name] != logits.shape[1]:
                wrong.append(name)
    if wrong:
        return (f"not yet for {wrong}: run each pattern on the image and the words and read the logits' length "
                "(logits.shape[1]): one position per token its decoder reads")
    return None


@exercise("01.4")
def llm_count_by_hand(answer, llm_config) -> str | None:
    """``answer``: the parameters of the InternLM2 LLM that ``llm_config`` describes, counted by hand."""
    from ..internvl import InternLM2ForCausalLM

    with torch.device("meta"):
        truth = sum(p.numel() for p in InternLM2ForCausalLM(llm_config).parameters())
    if answer == truth:
        return None
    hidden, layers = llm_config.hidden_size, llm_config.num_hidden_layers
    head_dim = hidden // llm_config.num_attention_heads
    grouped_qkv = hidden * (llm_config.num_attention_heads + 2 * llm_config.num_key_value_heads) * head_dim
    hints = {
        llm_config.vocab_size * hidden: "the output head `output` is its own matrix (vocab x hidden), not the "
                                        "embedding table reused: count both",
        hidden: "one more norm: the final RMSNorm before the output head",
        2 * hidden * layers: "each layer has two RMSNorms (attention_norm, ffn_norm) of `hidden` weights each",
        layers * (grouped_qkv - 3 * hidden * hidden): "wqkv is smaller than 3 x hidden x hidden: keys and values have only "
                                 "num_key_value_heads heads each (grouped-query attention)",
    }
    return hints.get(truth - answer, "count per layer wqkv (queries: all heads, keys and values: num_key_value_heads "
                                     "heads), wo, w1/w2/w3 and two norms; then embeddings, output head, final norm")
