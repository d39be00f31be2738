"""Lesson 01's teaching code: the ways to join vision and language as toy PyTorch modules (four families and a
query connector), InternVL2 models counted from their published configurations, InternViT beside timm's ViT, and
one forward pass stage by stage.

Everything here is small enough to read on the page (``show_source``) and runs on a CPU in well under a second;
the real-size models are built on PyTorch's ``meta`` device, which gives every parameter its shape without
allocating memory.
"""

from __future__ import annotations

import inspect
import random
import re

import numpy as np
import torch
from torch import nn

# ------------------------------------------------------------------------------------------- showing code
def show_source(obj):
    """The source of a function or class as a Markdown code block, with the module it lives in."""
    from IPython.display import Markdown

    return Markdown(f"`{obj.__module__}.{obj.__qualname__}`\n```python\n{inspect.getsource(obj)}```")


def sample_photo(size=(800, 600), seed: int = 0):
    """One synthetic dish photo at ``size`` (FoodieQA's photos are 800x600), drawn without building a dataset."""
    from .foodieqa.synthetic import draw_dish_image, draw_dishes

    rng = random.Random(seed)
    return draw_dish_image(draw_dishes(1, rng)[0], rng).resize(size)


# ----------------------------------------------------------------------- multimodal design patterns
VOCAB, WIDTH, VISION_WIDTH, HEADS, PATCH, TOY_IMAGE_SIZE = 50, 32, 48, 4, 8, 32


def transformer_layer(width: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(width, HEADS, 2 * width, dropout=0.0, batch_first=True, norm_first=True)


def causal_mask(length: int) -> torch.Tensor:
    return nn.Transformer.generate_square_subsequent_mask(length)


class ToyVisionEncoder(nn.Module):
    """Patchify with a strided convolution, then one bidirectional layer: (B, 3, H, W) -> (B, patches, width)."""

    def __init__(self, width: int = VISION_WIDTH):
        super().__init__()
        self.patchify = nn.Conv2d(3, width, PATCH, stride=PATCH)
        self.layer = transformer_layer(width)

    def forward(self, image):
        return self.layer(self.patchify(image).flatten(2).transpose(1, 2))


class ToyDecoder(nn.Module):
    """One causal layer and an output head: (B, L, width) embeddings -> (B, L, vocab) next-token logits."""

    def __init__(self, width: int = WIDTH, vocab: int = VOCAB):
        super().__init__()
        self.layer = transformer_layer(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, embeddings):
        length = embeddings.shape[1]
        return self.head(self.layer(embeddings, src_mask=causal_mask(length), is_causal=True))


class SeparateEncodersSharedDecoder(nn.Module):
    """A vision encoder, a projector into the LLM's embedding space, and an LLM that reads image tokens as words."""

    def __init__(self):
        super().__init__()
        self.vision = ToyVisionEncoder()
        self.projector = nn.Sequential(nn.Linear(VISION_WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH))
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.decoder = ToyDecoder()

    def forward(self, image, text_ids):
        image_features = self.vision(image)  # (B, patches, VISION_WIDTH)
        image_tokens = self.projector(image_features)  # (B, patches, WIDTH): the LLM's own width
        sequence = torch.cat([image_tokens, self.embed(text_ids)], dim=1)  # (B, patches + words, WIDTH)
        logits = self.decoder(sequence)
        return logits, {"image features": image_features, "projected image tokens": image_tokens,
                        "decoder input": sequence, "logits": logits}


class QueryConnector(nn.Module):
    """``num_queries`` learned vectors cross-attend to the ViT's patch tokens (a one-layer Q-Former / Perceiver
    resampler): (B, patches, vision_width) -> (B, num_queries, llm_width), however many patches come in."""

    def __init__(self, vision_width: int, llm_width: int, num_queries: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(0.02 * torch.randn(num_queries, llm_width))  # what to ask of every image
        self.patch_norm = nn.LayerNorm(vision_width)
        self.cross_attention = nn.MultiheadAttention(llm_width, heads, kdim=vision_width, vdim=vision_width,
                                                     batch_first=True)
        self.feed_forward = nn.Sequential(nn.LayerNorm(llm_width), nn.Linear(llm_width, llm_width), nn.GELU(),
                                          nn.Linear(llm_width, llm_width))

    def forward(self, patches):
        queries = self.queries.expand(patches.shape[0], -1, -1)  # the same queries for every image
        patches = self.patch_norm(patches)
        attended, weights = self.cross_attention(queries, patches, patches)  # weights: (B, queries, patches)
        tokens = queries + attended  # each token: a learned mix of all the patches, not one region of the image
        return tokens + self.feed_forward(tokens), weights


class QueryConnectorSharedDecoder(nn.Module):
    """Separate encoders + shared decoder, joined by learned queries instead of a per-patch projector: the LLM
    reads a fixed number of image tokens (BLIP-2, Qwen-VL)."""

    def __init__(self, num_queries: int = 4):
        super().__init__()
        self.vision = ToyVisionEncoder()
        self.connector = QueryConnector(VISION_WIDTH, WIDTH, num_queries, HEADS)
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.decoder = ToyDecoder()

    def forward(self, image, text_ids):
        image_features = self.vision(image)  # (B, patches, VISION_WIDTH)
        image_tokens, weights = self.connector(image_features)  # (B, num_queries, WIDTH)
        sequence = torch.cat([image_tokens, self.embed(text_ids)], dim=1)  # (B, num_queries + words, WIDTH)
        logits = self.decoder(sequence)
        return logits, {"image features": image_features, "query attention weights": weights,
                        "image tokens (queries)": image_tokens, "decoder input": sequence, "logits": logits}


class JointEncoder(nn.Module):
    """One Transformer reads image patches and words together from the first layer; a type embedding tells them apart."""

    def __init__(self):
        super().__init__()
        self.patchify = nn.Conv2d(3, WIDTH, PATCH, stride=PATCH)
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.modality = nn.Embedding(2, WIDTH)  # 0: image patch, 1: word
        self.encoder = nn.TransformerEncoder(transformer_layer(WIDTH), num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, image, text_ids):
        patches = self.patchify(image).flatten(2).transpose(1, 2) + self.modality.weight[0]  # (B, patches, WIDTH)
        words = self.embed(text_ids) + self.modality.weight[1]  # (B, words, WIDTH)
        sequence = torch.cat([patches, words], dim=1)
        encoded = self.encoder(sequence)  # bidirectional: every patch sees every word and back
        logits = self.head(encoded)
        return logits, {"patch embeddings": patches, "joint sequence": sequence, "encoded": encoded, "logits": logits}


class CrossModalConversion(nn.Module):
    """Image -> a few discrete caption tokens -> a text-only LLM; the LLM never sees a vector of the image."""

    def __init__(self, caption_length: int = 4):
        super().__init__()
        self.caption_length = caption_length
        self.vision = ToyVisionEncoder()
        self.captioner = nn.Linear(VISION_WIDTH, VOCAB)
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.decoder = ToyDecoder()

    def forward(self, image, text_ids):
        image_features = self.vision(image)  # (B, patches, VISION_WIDTH)
        regions = image_features.reshape(image.shape[0], self.caption_length, -1, VISION_WIDTH).mean(dim=2)
        caption_ids = self.captioner(regions).argmax(dim=-1)  # (B, caption_length): a hard choice, no gradient
        token_ids = torch.cat([caption_ids, text_ids], dim=1)  # (B, caption + words)
        logits = self.decoder(self.embed(token_ids))
        return logits, {"image features": image_features, "caption ids": caption_ids,
                        "decoder input ids": token_ids, "logits": logits}


class CrossAttentionDecoder(nn.Module):
    """The LLM's words attend to image features through an extra gated cross-attention layer (Flamingo-style)."""

    def __init__(self):
        super().__init__()
        self.vision = ToyVisionEncoder()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.self_attention = transformer_layer(WIDTH)
        self.cross_attention = nn.MultiheadAttention(WIDTH, HEADS, kdim=VISION_WIDTH, vdim=VISION_WIDTH, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(1))  # tanh(0) = 0: a pretrained LLM starts out unchanged
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, image, text_ids):
        image_features = self.vision(image)  # (B, patches, VISION_WIDTH): never enters the token sequence
        hidden = self.self_attention(self.embed(text_ids), src_mask=causal_mask(text_ids.shape[1]), is_causal=True)
        attended, weights = self.cross_attention(hidden, image_features, image_features)  # weights: (B, words, patches)
        hidden = hidden + torch.tanh(self.gate) * attended
        logits = self.head(hidden)
        return logits, {"image features": image_features, "decoder input": hidden,
                        "cross-attention weights": weights, "logits": logits}


DESIGN_PATTERNS = {
    "separate encoders + shared decoder": (
        SeparateEncodersSharedDecoder,
        "LLaVA, InternVL2, Qwen-VL",
        "every image token takes a place in the LLM's context (InternVL2: 256 per tile), so attention grows "
        "with image size; in return each part is pre-trained on its own and the LLM keeps its language skills",
    ),
    "separate encoders + query connector": (
        QueryConnectorSharedDecoder,
        "BLIP-2 (Q-Former), Qwen-VL (resampler), Flamingo (Perceiver resampler, with cross-attention)",
        "a fixed number of image tokens however large the image, but the queries must learn what to keep: a "
        "connector with attention to train, and fine detail (small text) can fall between the queries",
    ),
    "joint encoder": (
        JointEncoder,
        "ViLT, VisualBERT, UNITER (and Fuyu, as a decoder)",
        "no separate vision model to reuse: the whole Transformer learns vision and language together, which "
        "takes far more paired image-text data",
    ),
    "cross-modal conversion": (
        CrossModalConversion,
        "caption- or OCR-then-LLM pipelines (Socratic Models, Visual ChatGPT)",
        "cheapest (any text LLM, unchanged), but the image shrinks to a few words: what the caption misses is "
        "lost, and the hard token choice stops gradients from training the two parts together",
    ),
    "cross-attention": (
        CrossAttentionDecoder,
        "Flamingo, IDEFICS, Llama 3.2 Vision",
        "the context holds only words however large the image, but new cross-attention layers go into the LLM "
        "and must be trained",
    ),
}


def toy_inputs(batch: int = 1, words: int = 6, seed: int = 0):
    """A toy image (the sample dish photo at 32x32, as a (B, 3, 32, 32) tensor) and (B, words) token ids."""
    photo = sample_photo((TOY_IMAGE_SIZE, TOY_IMAGE_SIZE), seed)
    image = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)  # (3, 32, 32)
    text_ids = torch.randint(0, VOCAB, (batch, words), generator=torch.Generator().manual_seed(seed))
    return image.expand(batch, -1, -1, -1), text_ids


@torch.no_grad()
def run_design_patterns(seed: int = 0) -> list[dict]:
    """Each pattern run once on the toy inputs: its stage shapes, the length of the sequence its decoder reads,
    its parameters, who uses it and what it costs."""
    image, text_ids = toy_inputs(seed=seed)
    rows = []
    for name, (module_class, used_by, cost) in DESIGN_PATTERNS.items():
        torch.manual_seed(seed)
        module = module_class().eval()
        logits, stages = module(image, text_ids)
        rows.append({
            "pattern": name,
            "shapes": {"image": tuple(image.shape), "text ids": tuple(text_ids.shape)}
            | {stage: tuple(t.shape) for stage, t in stages.items()},
            "decoder_length": logits.shape[1],
            "parameters": count_parameters(module),
            "used_by": used_by,
            "cost": cost,
        })
    return rows


# -------------------------------------------------------------------- InternVL2 sizes, counted on meta
# The language models of InternVL2-1B and -8B as their published config.json files give them, named as the model
# cards name them; the vision side (InternViT-300M-448px, pixel shuffle 0.5, 448-px tiles, up to 12) is the same
# as InternVL2-2B's.
PUBLISHED_LANGUAGE_MODELS = {
    "InternVL2-1B": ("Qwen2-0.5B-Instruct", dict(
        architectures=["Qwen2ForCausalLM"], vocab_size=151655, hidden_size=896, intermediate_size=4864,
        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        rope_theta=1000000.0,
    )),
    "InternVL2-2B": ("internlm2-chat-1_8b", None),  # the course's internvl2-2b preset, checked against the official layout
    "InternVL2-8B": ("internlm2_5-7b-chat", dict(
        architectures=["InternLM2ForCausalLM"], vocab_size=92553, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
        rope_theta=1000000, rope_scaling={"type": "dynamic", "factor": 2.0},
    )),
}
PARTS = ("vision_model", "mlp1", "language_model")


def published_config(name: str):
    """The InternVLChatConfig of ``name``; raises NotImplementedError for an LLM the course's code does not have."""
    from .internvl import InternVLChatConfig
    from .tiny_model import build_config

    if name not in PUBLISHED_LANGUAGE_MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PUBLISHED_LANGUAGE_MODELS)}")
    spec = build_config("internvl2-2b").to_dict()
    llm_config = PUBLISHED_LANGUAGE_MODELS[name][1]
    if llm_config is not None:
        spec["llm_config"] = dict(llm_config)
    return InternVLChatConfig(**spec)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def component_parameter_counts(model) -> dict[str, int]:
    """Parameters of InternVL2's three parts: the ViT, the projector ``mlp1`` and the LLM."""
    return {part: count_parameters(getattr(model, part)) for part in PARTS}


def parameter_table(names=tuple(PUBLISHED_LANGUAGE_MODELS)) -> list[dict]:
    """Per model: parameters of the ViT, ``mlp1``, the LLM and in total, counted on a meta-device build;
    ``None`` counts and the reason in ``note`` where the course's code cannot build the model."""
    from .tiny_model import build_model

    rows = []
    for name in names:
        row = {"model": name, "LLM": PUBLISHED_LANGUAGE_MODELS[name][0]}
        try:
            model = build_model(published_config(name), device="meta")
        except NotImplementedError as error:
            rows.append(row | dict.fromkeys((*PARTS, "total")) | {"note": f"not built: {error}"})
            continue
        rows.append(row | component_parameter_counts(model) | {"total": count_parameters(model), "note": "built on the meta device"})
    return rows


def format_count(count: int | None) -> str:
    """2205754368 -> '2.21 B', 12595200 -> '12.6 M', None -> '-'."""
    if count is None:
        return "-"
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.1f} M"


# ------------------------------------------------------------------------ InternViT beside timm's ViT-L/14
VIT_GROUPS = (  # (group, pattern on parameter names of either implementation), first match wins
    ("patch embedding", r"patch_embed"),
    ("class token + positions", r"class_embedding|cls_token|position_embedding|pos_embed"),
    ("layer scale", r"\.ls[12]\b"),
    ("blocks: norms, attention, MLP", r"(layers|blocks)\.\d+\."),
    ("final norm", r"^norm\."),
)


def vit_parameter_groups(model: nn.Module) -> dict[str, int]:
    """Parameters of a ViT by role, for InternViT's and timm's parameter names alike."""
    groups = dict.fromkeys((group for group, _ in VIT_GROUPS), 0)
    for name, parameter in model.named_parameters():
        group = next(group for group, pattern in VIT_GROUPS if re.search(pattern, name))
        groups[group] += parameter.numel()
    return groups


def internvit_and_timm_vit(image_size: int = 448):
    """InternViT-300M (InternVL2-2B's vision tower) and timm's standard ViT-L/14 at the same tile size, on meta."""
    import timm

    from .internvl import InternVisionModel

    with torch.device("meta"):
        internvit = InternVisionModel(published_config("InternVL2-2B").vision_config)
        timm_vit = timm.create_model("vit_large_patch14_224", pretrained=False, img_size=image_size, num_classes=0)
    return internvit, timm_vit


def block_side_by_side(internvit, timm_vit) -> list[dict]:
    """One encoder block of each, parameter by parameter (same names: norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2)."""
    theirs = {name.removesuffix(".gamma"): tuple(p.shape) for name, p in timm_vit.blocks[0].named_parameters()}
    ours = {name: tuple(p.shape) for name, p in internvit.encoder.layers[0].named_parameters()}
    return [{"parameter": name, "InternViT-300M": ours.get(name, "-"), "timm ViT-L/14": theirs.get(name, "-")}
            for name in [*theirs, *(name for name in ours if name not in theirs)]]


# ---------------------------------------------------------------------------- one forward pass, stage by stage
@torch.no_grad()
def forward_stages(model, tokenizer, tiles, question: str) -> list[tuple[str, tuple]]:
    """Run ``model`` once on ``tiles`` and a chat prompt for ``question``; return (stage, tensor shape) in order.

    Forward hooks watch the model's own modules, so this works with the course's code and OpenGVLab's alike.
    """
    from .chat import chat_prompt

    prompt = chat_prompt(model, question, num_patches_list=[tiles.shape[0]])
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    watched = (  # (module, stage, which tensor): hooks on one module fire in this order
        (model.vision_model.embeddings.patch_embedding, "patch embedding (conv, stride = patch)", lambda a, k, o: o),
        (model.vision_model.embeddings, "+ class token + positions", lambda a, k, o: o),
        (model.vision_model.encoder, "ViT layers", lambda a, k, o: o[0]),
        (model.mlp1, "class token dropped, pixel shuffle", lambda a, k, o: a[0]),
        (model.mlp1, "mlp1 projector", lambda a, k, o: o),
        (model.language_model, "merged embeddings (text + image)", lambda a, k, o: k["inputs_embeds"]),
        (model.language_model, "logits", lambda a, k, o: o.logits),
    )
    stages = [("tiles", tuple(tiles.shape)), ("prompt token ids", tuple(input_ids.shape))]

    def watcher(stage, pick):
        return lambda module, args, kwargs, output: stages.append((stage, tuple(pick(args, kwargs, output).shape)))

    handles = [module.register_forward_hook(watcher(stage, pick), with_kwargs=True) for module, stage, pick in watched]
    try:
        image_flags = torch.ones(tiles.shape[0], 1, dtype=torch.long, device=model.device)
        model(pixel_values=tiles, input_ids=input_ids, image_flags=image_flags)
    finally:
        for handle in handles:
            handle.remove()
    return stages
