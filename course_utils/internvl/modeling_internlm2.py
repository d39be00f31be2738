"""InternLM2: the language model of InternVL2-2B, written from the published architecture.

Token embeddings -> N decoder layers (RMSNorm -> grouped-query attention with one packed ``wqkv`` projection and
rotary positions -> residual; RMSNorm -> SwiGLU feed-forward ``w2(silu(w1 x) * w3 x)`` -> residual) -> RMSNorm
-> ``output`` head. Parameter names follow the official checkpoints so real InternLM2 weights load unchanged.

Part of the model's remote code: copied into every model folder; imports only this folder, torch, transformers.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .configuration_internlm2 import InternLM2Config


class InternLM2RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * hidden_states.to(dtype)


class InternLM2RotaryEmbedding(nn.Module):
    """Rotary position angles; ``rope_scaling`` stretches positions (linear) or the base (dynamic NTK)."""

    def __init__(self, head_dim, max_position_embeddings, base, scaling=None):
        super().__init__()
        self.head_dim = head_dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        self.scaling_type = (scaling or {}).get("type")
        self.scaling_factor = float((scaling or {}).get("factor", 1.0))

    def inverse_frequencies(self, seq_len, device):
        base = self.base
        if self.scaling_type == "dynamic" and seq_len > self.max_position_embeddings:
            # NTK-aware: grow the base with the sequence so the lowest frequency still spans it
            stretch = self.scaling_factor * seq_len / self.max_position_embeddings - (self.scaling_factor - 1)
            base = base * stretch ** (self.head_dim / (self.head_dim - 2))
        exponents = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim
        return 1.0 / (base**exponents)

    def forward(self, position_ids, dtype):
        """cos and sin of shape (batch, seq, head_dim) for the given integer positions."""
        positions = position_ids.float()
        if self.scaling_type == "linear":
            positions = positions / self.scaling_factor
        inv_freq = self.inverse_frequencies(int(position_ids.max()) + 1, position_ids.device)
        angles = positions[..., None] * inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(query, key, cos, sin):
    """Rotate (batch, heads, seq, head_dim) queries and keys by their positions' angles."""
    cos, sin = cos[:, None], sin[:, None]
    return query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin


def attention_backend(config) -> str:
    """``"eager"`` only when asked for; every other request (sdpa, flash_attention_2) runs PyTorch SDPA."""
    requested = getattr(config, "attn_implementation", None) or getattr(config, "_attn_implementation_internal", None)
    return "eager" if requested == "eager" else "sdpa"


class InternLM2Attention(nn.Module):
    """Grouped-query attention. ``wqkv`` packs, per key/value head, its group of query heads then its key and value."""

    def __init__(self, config: InternLM2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.backend = attention_backend(config)
        self.wqkv = nn.Linear(
            config.hidden_size, (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim, bias=config.bias
        )
        self.wo = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias)

    def split_heads(self, packed):
        """(batch, seq, packed) -> queries (b, heads, s, d) and keys, values (b, kv_heads, s, d)."""
        batch, length, _ = packed.shape
        grouped = packed.view(batch, length, self.num_key_value_heads, self.num_key_value_groups + 2, self.head_dim)
        query = grouped[..., : self.num_key_value_groups, :].reshape(batch, length, self.num_heads, self.head_dim)
        key, value = grouped[..., -2, :], grouped[..., -1, :]
        return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)

    def forward(self, hidden_states, rotary, attention_mask, past_key_value=None, output_attentions=False):
        batch, length, _ = hidden_states.shape
        query, key, value = self.split_heads(self.wqkv(hidden_states))
        query, key = apply_rotary(query, key, *rotary)
        if past_key_value is not None:
            key, value = past_key_value.update(key, value, self.layer_idx)
        key = key.repeat_interleave(self.num_key_value_groups, dim=1)
        value = value.repeat_interleave(self.num_key_value_groups, dim=1)

        weights = None
        if self.backend == "eager" or output_attentions:
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)
            if attention_mask is None:
                attention_mask = causal_mask(length, key.shape[-2], query.device)
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            weights = scores.float().softmax(dim=-1).to(query.dtype)
            attended = weights @ value
        else:
            # no mask needed when the block is plainly causal: SDPA may then pick a FlashAttention kernel
            plain_causal = attention_mask is None and length > 1
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, is_causal=plain_causal)
        attended = attended.transpose(1, 2).reshape(batch, length, -1)
        return self.wo(attended), (weights if output_attentions else None)


class InternLM2MLP(nn.Module):
    def __init__(self, config: InternLM2Config):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.w2(self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states))


class InternLM2DecoderLayer(nn.Module):
    def __init__(self, config: InternLM2Config, layer_idx: int):
        super().__init__()
        self.attention = InternLM2Attention(config, layer_idx)
        self.feed_forward = InternLM2MLP(config)
        self.attention_norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.ffn_norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, rotary, attention_mask, past_key_value=None, output_attentions=False):
        attended, weights = self.attention(
            self.attention_norm(hidden_states), rotary, attention_mask, past_key_value, output_attentions
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.feed_forward(self.ffn_norm(hidden_states))
        return hidden_states, weights


def causal_mask(query_length, key_length, device):
    """(1, 1, q, k) boolean mask: query i (the last ``query_length`` positions) sees keys up to its own position."""
    offset = key_length - query_length
    query_positions = torch.arange(query_length, device=device)[:, None] + offset
    return (torch.arange(key_length, device=device)[None, :] <= query_positions)[None, None]


def build_attention_mask(padding_mask, query_length, key_length, device):
    """The boolean (batch, 1, q, k) mask for padded batches, or None when plain causal attention suffices.

    ``padding_mask`` is (batch, key_length) with 1/True for real tokens (XTuner pads on the right, batched chat
    on the left). Rows of padding queries that would see no key at all see every key instead: their outputs are
    ignored, and a fully masked row would make NaNs that leak into later layers through the values.
    """
    if padding_mask is None or bool(padding_mask.all()):
        # SDPA's is_causal covers a fresh block, and one new query may see every key: no mask tensor needed
        if query_length in (1, key_length):
            return None
        return causal_mask(query_length, key_length, device)
    mask = causal_mask(query_length, key_length, device) & padding_mask[:, None, None, -key_length:].bool()
    return mask | ~mask.any(dim=-1, keepdim=True)


class InternLM2PreTrainedModel(PreTrainedModel):
    config_class = InternLM2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternLM2DecoderLayer"]
    _supports_cache_class = True
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()


class InternLM2Model(InternLM2PreTrainedModel):
    """The decoder stack without the output head; takes token ids or ready-made embeddings (e.g. with image tokens)."""

    def __init__(self, config: InternLM2Config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([InternLM2DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary = InternLM2RotaryEmbedding(
            config.hidden_size // config.num_attention_heads,
            config.max_position_embeddings,
            config.rope_theta,
            config.rope_scaling,
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_embeddings

    def set_input_embeddings(self, value):
        self.tok_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
        **unused,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.tok_embeddings(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False  # recomputing layers in the backward pass cannot share a cache
        if use_cache and not isinstance(past_key_values, Cache):
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
        past_length = past_key_values.get_seq_length() if isinstance(past_key_values, Cache) else 0
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None].expand(batch, -1)
        mask = build_attention_mask(attention_mask, length, past_length + length, inputs_embeds.device)
        rotary = self.rotary(position_ids, inputs_embeds.dtype)

        hidden_states = inputs_embeds
        all_hidden_states = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        cache = past_key_values if use_cache else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if self.gradient_checkpointing and self.training:
                hidden_states, weights = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, rotary, mask, None, output_attentions
                )
            else:
                hidden_states, weights = layer(hidden_states, rotary, mask, cache, output_attentions)
            if output_attentions:
                all_attentions.append(weights)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=cache,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class InternLM2ForCausalLM(InternLM2PreTrainedModel, GenerationMixin):
    """InternLM2 with its ``output`` head; ``generate()`` comes from transformers' GenerationMixin."""

    _tied_weights_keys = ["output.weight"]

    def __init__(self, config: InternLM2Config):
        super().__init__(config)
        self.model = InternLM2Model(config)
        self.vocab_size = config.vocab_size
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.tok_embeddings

    def set_input_embeddings(self, value):
        self.model.tok_embeddings = value

    def get_output_embeddings(self):
        return self.output

    def set_output_embeddings(self, new_embeddings):
        self.output = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
        **unused,
    ):
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.output(outputs.last_hidden_state).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, self.vocab_size), labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100
            )
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()
