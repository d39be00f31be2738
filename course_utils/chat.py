"""Talking to an InternVL2 model with transformers: load it, ask about an image, stream the answer.

These work with any InternVL2 folder - the course's tiny model or the official OpenGVLab checkpoints - because
they use only the model card's API (``model.chat``, ``model.batch_chat``) and transformers' streamer.
"""

from __future__ import annotations

from pathlib import Path
from threading import Event, Thread
from typing import Iterator


def load_model(model_path: str | Path, device: str | None = None, dtype=None):
    """Load an InternVL2 folder with its remote code: returns (model, tokenizer), in eval mode.

    Defaults: bf16 on a GPU, float32 on the CPU (bf16 matrix products are slow on most CPUs).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True, torch_dtype=dtype, low_cpu_mem_usage=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True, use_fast=False)
    return model.to(device).eval(), tokenizer


def image_pixel_values(model, image, max_num: int | None = None):
    """An image (path or PIL) as the model's tiles, on the model's device and dtype."""
    from .internvl import load_image

    config = model.config
    tiles = load_image(
        image,
        image_size=config.force_image_size or config.vision_config.image_size,
        max_num=max_num or config.max_dynamic_patch,
        min_num=config.min_dynamic_patch,
        use_thumbnail=config.use_thumbnail,
    )
    return tiles.to(device=model.device, dtype=model.dtype)


def chat_prompt(model, question: str, num_patches_list=(), history=None) -> str:
    """The exact prompt ``model.chat`` builds: the model's template and system message, image placeholders
    expanded to ``model.num_image_token`` ``<IMG_CONTEXT>`` tokens per tile."""
    from .internvl import build_prompt

    return build_prompt(model.template, model.system_message, model.num_image_token, question, history, num_patches_list)


class GenerationCancelled(Exception):
    """Raised inside the generation by :meth:`AnswerStreamer.put` once the answer is no longer wanted."""


class AnswerStreamer:
    """The model card's ``TextIteratorStreamer`` (iterate it for the text pieces), plus what a server needs:
    ``new_tokens`` (tokens generated before ``end_token_id``), ``ended`` (whether the model wrote that end token),
    and :meth:`cancel`, which stops the generation at its next decoding step. The model calls ``put`` once per
    step, so that is where a cancelled answer raises :class:`GenerationCancelled`.

    ``text=False`` counts and cancels only: decoding the text at every step costs a slow tokenizer milliseconds
    per token, wasted when the answer is wanted whole."""

    def __init__(self, tokenizer, end_token_id: int | None = None, timeout: float = 600, text: bool = True):
        from transformers import TextIteratorStreamer

        self.text = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                         timeout=timeout) if text else None
        self.prompt_pending = True  # the first call hands over the prompt
        self.end_token_id = end_token_id
        self.new_tokens = 0
        self.ended = False
        self.cancelled = Event()

    def put(self, value) -> None:
        if self.cancelled.is_set():
            raise GenerationCancelled("the answer was cancelled")
        if not self.prompt_pending and not self.ended:
            tokens = value.reshape(-1).tolist()
            if self.end_token_id in tokens:
                tokens, self.ended = tokens[:tokens.index(self.end_token_id)], True
            self.new_tokens += len(tokens)
        self.prompt_pending = False
        if self.text is not None:
            self.text.put(value)

    def end(self) -> None:
        if self.text is not None:
            self.text.end()

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        return iter(self.text)


def stream_chat(model, tokenizer, pixel_values, question: str, generation_config: dict,
                history=None, streamer: AnswerStreamer | None = None) -> Iterator[str]:
    """Yield the answer piece by piece as the model writes it (the model card's TextIteratorStreamer recipe).

    ``"".join(stream_chat(...)).strip()`` equals ``model.chat(...)`` for the same greedy settings. Closing the
    generator early (or ``streamer.cancel()``) stops the generation at its next step instead of letting it run on.
    """
    streamer = streamer or AnswerStreamer(tokenizer)
    errors: list[BaseException] = []

    def generate():
        try:
            model.chat(tokenizer, pixel_values, question, dict(generation_config, streamer=streamer), history=history)
        except BaseException as error:  # surfaced in the caller's thread below
            errors.append(error)
            streamer.end()

    worker = Thread(target=generate, daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        if worker.is_alive():
            streamer.cancel()
        worker.join()
    if errors and not isinstance(errors[0], GenerationCancelled):
        raise errors[0]
