"""InternViT: the vision encoder of InternVL2, written from the published architecture.

Image tiles (B, 3, S, S) -> patch embeddings (conv, stride = patch) with a class token and learned absolute
positions -> N pre-norm Transformer blocks with layer scale -> (B, 1 + (S/patch)^2, D).
Parameter names follow the official checkpoints (``embeddings.patch_embedding``, ``encoder.layers.N.attn.qkv``,
``ls1``/``ls2`` ...) so real InternViT weights load unchanged.

Part of the model's remote code: copied into every model folder; imports only this folder, torch, transformers.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

from .configuration_intern_vit import InternVisionConfig


class InternRMSNorm(nn.Module):
    """Root-mean-square norm of InternViT-6B, computed in float32; the same arithmetic as ``InternLM2RMSNorm``
    (kept as its own copy so this file reads, and loads, on its own, like the official single-file models)."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * hidden_states.to(dtype)


def make_norm(norm_type, hidden_size, eps):
    """The block norm named by the config's ``norm_type``."""
    if norm_type == "rms_norm":
        return InternRMSNorm(hidden_size, eps=eps)
    if norm_type == "layer_norm":
        return nn.LayerNorm(hidden_size, eps=eps)
    raise ValueError(f"unknown norm_type {norm_type!r}: expected 'rms_norm' or 'layer_norm'")


def drop_path(hidden_states, drop_prob, training):
    """Stochastic depth: drop a sample's whole residual branch with probability ``drop_prob`` while training."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


class InternVisionEmbeddings(nn.Module):
    """Patchify with a strided convolution, prepend the class token, add (interpolated) absolute positions."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        self.grid_size = config.image_size // config.patch_size
        self.class_embedding = nn.Parameter(torch.randn(1, 1, self.embed_dim))
        self.patch_embedding = nn.Conv2d(config.num_channels, self.embed_dim, config.patch_size, config.patch_size)
        self.position_embedding = nn.Parameter(torch.randn(1, self.grid_size**2 + 1, self.embed_dim))

    def patch_positions(self, height, width):
        """Positions for a (height x width) patch grid: the trained grid, resized bicubically if it differs."""
        positions = self.position_embedding[:, 1:]
        if (height, width) == (self.grid_size, self.grid_size):
            return positions
        grid = positions.float().reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return grid.reshape(1, -1, height * width).permute(0, 2, 1).to(positions.dtype)

    def forward(self, pixel_values):
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        batch, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        class_token = self.class_embedding.expand(batch, 1, -1).to(patches.dtype)
        positions = torch.cat([self.position_embedding[:, :1], self.patch_positions(height, width)], dim=1)
        return torch.cat([class_token, patches], dim=1) + positions.to(patches.dtype)


class InternAttention(nn.Module):
    """Bidirectional multi-head self-attention with one packed ``qkv`` projection."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"hidden_size {self.embed_dim} is not divisible by num_attention_heads {self.num_heads}")
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=config.qkv_bias)
        self.attention_dropout = config.attention_dropout
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.q_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
            self.k_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, hidden_states):
        batch, length, _ = hidden_states.shape
        query, key, value = self.qkv(hidden_states).chunk(3, dim=-1)
        if self.qk_normalization:  # normalised over all heads together, before the split into heads
            query, key = self.q_norm(query), self.k_norm(key)
        query, key, value = (t.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (query, key, value))
        dropout = self.attention_dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        attended = attended.transpose(1, 2).reshape(batch, length, self.embed_dim)
        return self.proj_drop(self.proj(attended))


class InternMLP(nn.Module):
    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(self.act(self.fc1(hidden_states)))


class InternVisionEncoderLayer(nn.Module):
    """Pre-norm block: x + ls1 * attn(norm1(x)), then x + ls2 * mlp(norm2(x)); ls = learned per-channel scale."""

    def __init__(self, config: InternVisionConfig, drop_path_rate: float):
        super().__init__()
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = make_norm(config.norm_type, config.hidden_size, config.layer_norm_eps)
        self.norm2 = make_norm(config.norm_type, config.hidden_size, config.layer_norm_eps)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(config.hidden_size))
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(config.hidden_size))
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states):
        attended = self.attn(self.norm1(hidden_states).to(hidden_states.dtype)) * self.ls1
        hidden_states = hidden_states + drop_path(attended, self.drop_path_rate, self.training)
        transformed = self.mlp(self.norm2(hidden_states).to(hidden_states.dtype)) * self.ls2
        return hidden_states + drop_path(transformed, self.drop_path_rate, self.training)


class InternVisionEncoder(nn.Module):
    def __init__(self, config: InternVisionConfig):
        super().__init__()
        # stochastic depth grows linearly with depth, as in the published recipe
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList([InternVisionEncoderLayer(config, rate) for rate in rates])
        self.gradient_checkpointing = False

    def forward(self, hidden_states, output_hidden_states=False):
        all_states = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(layer.__call__, hidden_states)
            else:
                hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_states.append(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=tuple(all_states) if all_states else None)


class InternVisionModel(PreTrainedModel):
    """The vision tower: ``embeddings`` + ``encoder``; ``pooler_output`` is the class token."""

    main_input_name = "pixel_values"
    config_class = InternVisionConfig
    _no_split_modules = ["InternVisionEncoderLayer"]
    supports_gradient_checkpointing = True

    def __init__(self, config: InternVisionConfig):
        super().__init__(config)
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)
        self.post_init()

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, InternVisionEmbeddings):
            nn.init.normal_(module.class_embedding, std=std)
            nn.init.normal_(module.position_embedding, std=std)

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, pixel_values, output_hidden_states=False, return_dict=True):
        if pixel_values is None:
            raise ValueError("pixel_values is required: a (tiles, 3, size, size) tensor from the image preprocessing")
        encoded = self.encoder(self.embeddings(pixel_values), output_hidden_states=output_hidden_states)
        last_hidden_state = encoded.last_hidden_state
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[:, 0, :],
            hidden_states=encoded.hidden_states,
        )
        return output if return_dict else output.to_tuple()
