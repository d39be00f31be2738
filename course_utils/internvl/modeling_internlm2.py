"""InternLM2: the language model of InternVL2-2B, written from the published architecture.

Token embeddings -> N decoder layers (RMSNorm -> grouped-query attention with one packed ``wqkv`` projection and
rotary positions -> residual; RMSNorm -> SwiGLU feed-forward ``w2(silu(w1 x) * w3 x)`` -> residual) -> RMSNorm
-> ``output`` head. Parameter names follow the official checkpoints so real InternLM2 weights load unchanged.

Generation has two paths: transformers' ``generate()`` (any setting it knows, a growing ``DynamicCache``), and
``decode()``, a lean loop for greedy or sampled answers: keys and values go into a preallocated
``InternLM2StaticCache`` written in place, the forward never waits for the GPU (no ``.item()``), and on a CUDA GPU
each one-token step is replayed as a captured CUDA graph, so the step costs one launch instead of hundreds.

Part of the model's remote code: copied into every model folder; imports only this folder, torch, transformers.
"""

import copy
import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .configuration_internlm2 import InternLM2Config


# generation settings that ``InternLM2ForCausalLM.decode`` implements (``streamer`` is its own argument)
DECODE_SETTINGS = {
    "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "eos_token_id",
    "pad_token_id",
}


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
        """Frequencies for sequences of ``seq_len`` positions (an int or a 0-d tensor: no host sync needed)."""
        exponents = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim
        plain = 1.0 / (self.base**exponents)
        if self.scaling_type != "dynamic":
            return plain
        # NTK-aware: past the trained length, grow the base with the sequence so the lowest frequency still spans it
        seq_len = torch.as_tensor(seq_len, device=device, dtype=torch.float32)
        stretch = (self.scaling_factor * seq_len / self.max_position_embeddings - (self.scaling_factor - 1)).clamp(min=1)
        stretched = 1.0 / ((self.base * stretch ** (self.head_dim / (self.head_dim - 2))) ** exponents)
        return torch.where(seq_len > self.max_position_embeddings, stretched, plain)

    def forward(self, position_ids, dtype):
        """cos and sin of shape (batch, seq, head_dim) for the given integer positions."""
        positions = position_ids.float()
        if self.scaling_type == "linear":
            positions = positions / self.scaling_factor
        seq_len = position_ids.max() + 1 if self.scaling_type == "dynamic" else None
        inv_freq = self.inverse_frequencies(seq_len, position_ids.device)
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

    def forward(self, hidden_states, rotary, attention_mask, past_key_value=None, output_attentions=False,
                cache_position=None):
        batch, length, _ = hidden_states.shape
        query, key, value = self.split_heads(self.wqkv(hidden_states))
        query, key = apply_rotary(query, key, *rotary)
        if past_key_value is not None:
            key, value = past_key_value.update(key, value, self.layer_idx, {"cache_position": cache_position})

        weights = None
        if self.backend == "eager" or output_attentions or length == 1:
            # one new query (every decoding step) gains nothing from a fused kernel: the grouped product reads
            # the cache once and launches a handful of kernels
            attended, weights = grouped_attention(query, key, value, attention_mask)
        else:
            # no mask needed when the block is plainly causal: SDPA may then pick a FlashAttention kernel
            key = key.repeat_interleave(self.num_key_value_groups, dim=1)  # prompt-sized, once per prompt
            value = value.repeat_interleave(self.num_key_value_groups, dim=1)
            attended = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, is_causal=attention_mask is None
            )
        attended = attended.transpose(1, 2).reshape(batch, length, -1)
        return self.wo(attended), (weights if output_attentions else None)


def grouped_attention(query, key, value, mask):
    """Softmax attention of (b, heads, q, d) queries over (b, kv_heads, k, d) keys/values without copying them.

    Query heads are stored group by group, so a view (b, kv_heads, group * q, d) lines each key/value head up
    with its own query heads. ``mask``: boolean (b or 1, 1, q, k), True = may attend; None = causal.
    Returns the attended values (b, heads, q, d) and the weights (b, heads, q, k).
    """
    batch, heads, length, head_dim = query.shape
    kv_heads, key_length = key.shape[1], key.shape[2]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads * length, head_dim)
    scores = (grouped @ key.transpose(-1, -2)).view(batch, heads, length, key_length) / math.sqrt(head_dim)
    if mask is None and length > 1:
        mask = causal_mask(torch.arange(key_length - length, key_length, device=query.device), key_length)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.float().softmax(dim=-1).to(query.dtype)
    attended = weights.view(batch, kv_heads, -1, key_length) @ value
    return attended.view(batch, heads, length, head_dim), weights


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

    def forward(self, hidden_states, rotary, attention_mask, past_key_value=None, output_attentions=False,
                cache_position=None):
        attended, weights = self.attention(
            self.attention_norm(hidden_states), rotary, attention_mask, past_key_value, output_attentions, cache_position
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.feed_forward(self.ffn_norm(hidden_states))
        return hidden_states, weights


def causal_mask(query_positions, key_length):
    """(1, 1, q, k) boolean mask: the query at cache column ``query_positions[i]`` sees keys up to that column."""
    key_positions = torch.arange(key_length, device=query_positions.device)
    return (key_positions[None, :] <= query_positions[:, None])[None, None]


def build_attention_mask(padding_mask, cache_position, key_length, exact_keys=True):
    """The boolean (batch, 1, q, k) mask, or None when plain causal attention suffices.

    ``padding_mask`` is (batch, key_length) with 1/True for real tokens (XTuner pads on the right, batched chat
    on the left); ``cache_position`` holds the cache columns of the q queries. ``exact_keys`` says the keys
    end at the last query (a growing cache); a static cache has unwritten columns, so it always needs a mask.
    Rows of padding queries that would see no key at all see every key instead: their outputs are ignored, and
    a fully masked row would make NaNs that leak into later layers through the values. Nothing here reads a
    tensor's value on the host, so a forward never waits for the GPU.
    """
    length = cache_position.shape[0]
    if padding_mask is None:
        # SDPA's is_causal covers a fresh block, and one new query may see every key: no mask tensor needed
        if exact_keys and length in (1, key_length):
            return None
        return causal_mask(cache_position, key_length)
    mask = causal_mask(cache_position, key_length) & padding_mask[:, None, None, -key_length:].bool()
    return mask | ~mask.any(dim=-1, keepdim=True)


class InternLM2StaticCache:
    """Keys and values of every layer in tensors allocated once, (batch, kv_heads, max_length, head_dim) each.

    ``update`` writes the new keys/values in place at the ``cache_position`` columns and returns the whole
    buffers; the attention mask hides columns not written yet. Left-padded batches keep every row's columns
    aligned, so one column index serves the whole batch.
    """

    def __init__(self, config, batch_size, max_length, device, dtype):
        head_dim = config.hidden_size // config.num_attention_heads
        shape = (batch_size, config.num_key_value_heads, max_length, head_dim)
        self.max_length = max_length
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]

    def update(self, key, value, layer_idx, cache_kwargs):
        columns = cache_kwargs["cache_position"]
        self.keys[layer_idx].index_copy_(2, columns, key)
        self.values[layer_idx].index_copy_(2, columns, value)
        return self.keys[layer_idx], self.values[layer_idx]


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
        cache_position=None,
        **unused,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.tok_embeddings(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False  # recomputing layers in the backward pass cannot share a cache
        static = isinstance(past_key_values, InternLM2StaticCache)
        if use_cache and not static and not isinstance(past_key_values, Cache):
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
        batch, length = inputs_embeds.shape[:2]
        if static:
            if cache_position is None:
                raise ValueError("a static cache needs cache_position: the cache columns the new tokens go to")
            key_length = past_key_values.max_length
        else:
            past_length = past_key_values.get_seq_length() if isinstance(past_key_values, Cache) else 0  # a host int
            if cache_position is None:
                cache_position = torch.arange(past_length, past_length + length, device=inputs_embeds.device)
            key_length = past_length + length
        if position_ids is None:
            position_ids = cache_position[None].expand(batch, -1)
        mask = build_attention_mask(attention_mask, cache_position, key_length, exact_keys=not static)
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
                hidden_states, weights = layer(hidden_states, rotary, mask, cache, output_attentions, cache_position)
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
        cache_position=None,
        num_logits_to_keep=0,
        **unused,
    ):
        """``num_logits_to_keep=n`` computes the logits of the last n positions only (generation needs one)."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cache_position=cache_position,
        )
        logits = self.output(outputs.last_hidden_state[:, -num_logits_to_keep:]).float()
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

    @torch.no_grad()
    def decode(self, inputs_embeds, attention_mask=None, streamer=None, cuda_graph=None, **generation_kwargs):
        """Greedy or sampled generation on a static cache; returns the new tokens (batch, n) as ``generate`` does.

        ``generation_kwargs`` (defaults from ``generation_config``): ``max_new_tokens`` (required),
        ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``eos_token_id``,
        ``pad_token_id``; ``streamer`` receives the tokens as they come, as with ``generate``. The same settings
        choose the same tokens as ``generate``: finished rows are padded, and the loop ends when every row has
        written an end token or ``max_new_tokens`` tokens. ``cuda_graph``: replay each one-token step as a
        captured CUDA graph (default: on a CUDA device, in eval mode).
        """
        unsupported = set(generation_kwargs) - DECODE_SETTINGS
        if unsupported:
            raise ValueError(f"decode does not implement {sorted(unsupported)}; use generate() for other settings")
        settings = copy.deepcopy(self.generation_config)
        settings.update(**generation_kwargs)
        if not settings.max_new_tokens:
            raise ValueError("decode needs max_new_tokens")
        end_ids = settings.eos_token_id
        end_ids = [] if end_ids is None else [end_ids] if isinstance(end_ids, int) else list(end_ids)
        pad_id = settings.pad_token_id if settings.pad_token_id is not None else (end_ids[0] if end_ids else 0)
        batch, prompt_length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        if attention_mask is None:
            attention_mask = torch.ones(batch, prompt_length, dtype=torch.long, device=device)
        if cuda_graph is None:
            cuda_graph = device.type == "cuda" and not self.training
        with DECODING:  # a model has one static cache: calls from several threads take turns
            total_length = prompt_length + settings.max_new_tokens
            decoder = self._static_decoder(batch, total_length, inputs_embeds.dtype, device, cuda_graph)
            processors = logits_processors(settings)
            end_ids = torch.tensor(end_ids, dtype=torch.long, device=device)
            finished = torch.zeros(batch, dtype=torch.bool, device=device)
            # the loop asks "all finished?" one step late: the GPU computes the next step while the host waits
            all_finished = torch.zeros((), dtype=torch.bool, pin_memory=device.type == "cuda")

            logits = decoder.prefill(self, inputs_embeds, attention_mask)
            new_tokens = torch.empty(batch, 0, dtype=torch.long, device=device)
            if streamer is not None:
                streamer.put(new_tokens.cpu())  # generate() first hands the streamer the (empty) prompt ids
            for step in range(settings.max_new_tokens):
                scores = processors(new_tokens, logits)
                if settings.do_sample:
                    tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)
                else:
                    tokens = scores.argmax(dim=-1)
                tokens = tokens.masked_fill(finished, pad_id)
                new_tokens = torch.cat([new_tokens, tokens[:, None]], dim=1)
                if streamer is not None:
                    streamer.put(tokens.cpu())
                finished |= torch.isin(tokens, end_ids)
                if step + 1 == settings.max_new_tokens:
                    break
                all_finished.copy_(finished.all(), non_blocking=True)
                copied = torch.cuda.Event() if device.type == "cuda" else None
                if copied is not None:
                    copied.record()
                logits = decoder.step(self, tokens)
                if copied is not None:
                    copied.synchronize()
                if all_finished:
                    break
            if streamer is not None:
                streamer.end()
            return new_tokens

    def _static_decoder(self, batch, length, dtype, device, cuda_graph):
        """The decoder for this batch and length (rounded up to 64 columns so similar prompts share it).

        One is kept: a new shape frees the last one. Its key includes the parameters' addresses, so a model whose
        weights were replaced or wrapped (e.g. LoRA layers added) captures its graph again.
        """
        max_length = -(-length // 64) * 64
        key = (batch, max_length, dtype, str(device), cuda_graph, tuple(p.data_ptr() for p in self.parameters()))
        decoder = STATIC_DECODERS.get(self)
        if decoder is None or decoder.key != key:
            STATIC_DECODERS.pop(self, None)  # free the old cache (and graph) before allocating the new one
            decoder = STATIC_DECODERS[self] = StaticDecoder(self.config, key, batch, max_length, dtype, device, cuda_graph)
        return decoder


# Each model's decoder, kept outside the module so copying or saving the model never meets a CUDA graph.
STATIC_DECODERS = weakref.WeakKeyDictionary()
DECODING = threading.RLock()


def logits_processors(settings):
    """The score processors ``generate`` applies for these settings, in its order (sampling warpers last)."""
    processors = LogitsProcessorList()
    if settings.repetition_penalty is not None and settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.do_sample:
        if settings.temperature is not None and settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k is not None and settings.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=settings.top_k, min_tokens_to_keep=1))
        if settings.top_p is not None and settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=settings.top_p, min_tokens_to_keep=1))
    return processors


class StaticDecoder:
    """A static cache for (batch, max_length) and the one-token step that extends it, as a CUDA graph on a GPU.

    The step's inputs live in fixed tensors (the new tokens, their positions, their cache column) and the step
    itself advances position and column, so a captured graph replays every step with no work on the host.
    """

    def __init__(self, config, key, batch, max_length, dtype, device, cuda_graph):
        self.key, self.cuda_graph = key, cuda_graph
        self.cache = InternLM2StaticCache(config, batch, max_length, device, dtype)
        self.key_mask = torch.zeros(batch, max_length, dtype=torch.bool, device=device)  # columns that hold a token
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = self.logits = None

    def prefill(self, model, inputs_embeds, attention_mask):
        """Run the prompt (left-padded: row positions count real tokens only) into the cache; last logits (b, vocab)."""
        length = inputs_embeds.shape[1]
        self.key_mask.zero_()
        self.key_mask[:, :length] = attention_mask.bool()
        positions = attention_mask.long().cumsum(-1) - 1
        positions.masked_fill_(attention_mask == 0, 1)  # as generate() numbers padding
        columns = torch.arange(length, device=inputs_embeds.device)
        logits = model(inputs_embeds=inputs_embeds, attention_mask=self.key_mask, position_ids=positions,
                            past_key_values=self.cache, use_cache=True, cache_position=columns, num_logits_to_keep=1).logits
        self.positions.copy_(positions[:, -1:])
        self.column.fill_(length - 1)
        return logits[:, -1]

    def forward_one(self, model):
        """Logits (b, vocab) after feeding ``self.tokens`` at the next column and position."""
        self.positions += 1
        self.column += 1
        self.key_mask.index_fill_(1, self.column, True)
        return model(input_ids=self.tokens, attention_mask=self.key_mask, position_ids=self.positions,
                          past_key_values=self.cache, use_cache=True, cache_position=self.column).logits[:, -1]

    def step(self, model, tokens):
        self.tokens.copy_(tokens[:, None])
        if not self.cuda_graph:
            return self.forward_one(model)
        if self.graph is None:
            self.capture(model)
        self.graph.replay()
        return self.logits

    def capture(self, model):
        """Warm up (lazy kernel set-up must not happen while capturing), undo the warm-up's writes, capture."""
        state = [t.clone() for t in (self.positions, self.column, self.key_mask)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward_one(model)
        torch.cuda.current_stream().wait_stream(side)
        for tensor, saved in zip((self.positions, self.column, self.key_mask), state):
            tensor.copy_(saved)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = self.forward_one(model)
