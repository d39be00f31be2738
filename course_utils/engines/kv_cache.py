"""The KV cache in numbers: how much memory one token's keys and values take, and how many tokens (and requests)
LMDeploy's ``cache_max_entry_count`` buys.

LMDeploy's PyTorch engine loads the weights, measures the free GPU memory, keeps some for activations, and turns
``cache_max_entry_count`` of the rest into blocks of ``block_size`` (64) tokens. Every request holds the blocks its
prompt and answer need, so the number of blocks decides how many requests run at once.

``quant_policy`` (LMDeploy's knob: 0, 8 or 4) stores the cache as 8- or 4-bit integers. LMDeploy 0.10.2
(``pytorch/engine/cache_engine.py``) keeps each head's key and value of a token as ``head_dim`` bytes (8 bits) or
``head_dim / 2`` bytes (4 bits, two to a byte), plus a scale and a zero point in the model's dtype beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BLOCK_SIZE = 64  # LMDeploy's PyTorch engine default (PytorchEngineConfig.block_size)
QUANT_POLICIES = (0, 8, 4)  # LMDeploy's quant_policy: 16-bit cache, 8-bit integers, 4-bit integers


@dataclass(frozen=True)
class LLMShape:
    """What the KV cache of a decoder depends on."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_llm_config(cls, llm_config: dict) -> "LLMShape":
        heads = llm_config["num_attention_heads"]
        return cls(llm_config["num_hidden_layers"], llm_config.get("num_key_value_heads", heads),
                   llm_config["hidden_size"] // heads)

    @classmethod
    def from_model_dir(cls, model_path) -> "LLMShape":
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
        return cls.from_llm_config(config["llm_config"])

    def bytes_per_token(self, dtype_bytes: int = 2, quant_policy: int = 0) -> int:
        """Keys and values of one token in every layer: ``dtype_bytes`` a number (bf16/fp16: 2), or with
        ``quant_policy`` 8 / 4 LMDeploy's integer layout (a byte or half a byte a number, and a scale and a zero
        point of ``dtype_bytes`` each per head)."""
        if quant_policy not in QUANT_POLICIES:
            raise ValueError(f"quant_policy must be one of {QUANT_POLICIES} (LMDeploy's), got {quant_policy!r}")
        if quant_policy == 0:
            per_head = self.head_dim * dtype_bytes
        else:
            per_head = self.head_dim * quant_policy // 8 + 2 * dtype_bytes  # integers, then scale and zero point
        return 2 * self.layers * self.kv_heads * per_head


def kv_cache_plan(shape: LLMShape, free_bytes: float, cache_max_entry_count: float, tokens_per_request: int,
                  block_size: int = BLOCK_SIZE, dtype_bytes: int = 2, quant_policy: int = 0) -> dict:
    """Blocks, tokens and whole requests that fit when ``cache_max_entry_count`` of ``free_bytes`` becomes cache
    (LMDeploy's rule, without the activation reserve it subtracts first)."""
    block_bytes = shape.bytes_per_token(dtype_bytes, quant_policy) * block_size
    blocks = int(free_bytes * cache_max_entry_count // block_bytes)
    blocks_per_request = -(-tokens_per_request // block_size)  # a request holds whole blocks
    return {"cache_max_entry_count": cache_max_entry_count, "quant_policy": quant_policy,
            "cache_gib": round(blocks * block_bytes / 2**30, 2), "blocks": blocks, "tokens": blocks * block_size,
            "requests_at_once": blocks // blocks_per_request}
