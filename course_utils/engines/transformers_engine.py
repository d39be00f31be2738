"""The transformers backend: any InternVL2 folder (the course's code or OpenGVLab's remote code) through the model
card's own API - ``model.chat`` for one question or a conversation, ``model.batch_chat`` for a batch - on the CPU
or a GPU. Whatever makes those methods fast in the model code makes this engine fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Sequence

from transformers.generation.streamers import BaseStreamer

from ..chat import chat_prompt, image_pixel_values, load_model, stream_chat
from .interface import Answer, GenerationSettings, free_memory, open_image, place_image, warn_lmdeploy_only

DTYPES = ("auto", "bfloat16", "float16", "float32")
END_TOKEN = "<|im_end|>"  # InternLM2's end of turn: where model.chat and batch_chat stop


class TokenCounter(BaseStreamer):
    """Counts each row's generated tokens before its end token, as generate() hands them out (LMDeploy does not
    count the end token either)."""

    def __init__(self, rows: int, end_token_id: int):
        self.counts = [0] * rows
        self.finished = [False] * rows
        self.end_token_id = end_token_id
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate() first sends the prompt (empty here: the model passes embeddings)
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            self.finished[row] = self.finished[row] or token == self.end_token_id
            if not self.finished[row]:
                self.counts[row] += 1

    def end(self):
        pass


def torch_dtype(dtype: str):
    """A dtype name as torch's dtype; None for "auto" (bfloat16 on a GPU, float32 on the CPU)."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    return None if dtype == "auto" else getattr(torch, dtype)


def generation_config(settings: GenerationSettings, max_new_tokens: int) -> dict:
    """The settings as the keyword arguments of ``model.chat`` / ``generate``."""
    config = dict(max_new_tokens=max_new_tokens, do_sample=not settings.greedy,
                  repetition_penalty=settings.repetition_penalty)
    if not settings.greedy:
        config.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    return config


class TransformersEngine:
    """One InternVL2 model loaded with transformers; see :mod:`course_utils.engines.interface` for the methods."""

    backend = "transformers"

    def __init__(self, model_path: Path, *, device: str | None = None, dtype: str = "auto",
                 max_dynamic_patch: int | None = None, session_len: int | None = None,
                 cache_max_entry_count: float | None = None, max_batch_size: int | None = None, tp: int = 1,
                 vision_batch_size: int | None = None):
        if tp != 1:
            raise ValueError("the transformers engine runs on one device (tp=1); tensor parallelism needs LMDeploy")
        warn_lmdeploy_only("the transformers engine", cache_max_entry_count=cache_max_entry_count,
                           vision_batch_size=vision_batch_size)
        for name, value in (("max_dynamic_patch", max_dynamic_patch), ("session_len", session_len),
                            ("max_batch_size", max_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (got {value})")
        self.model_path = Path(model_path)
        self.model, self.tokenizer = load_model(self.model_path, device=device, dtype=torch_dtype(dtype))
        self.max_dynamic_patch = max_dynamic_patch or self.model.config.max_dynamic_patch
        self.session_len = session_len
        self.max_batch_size = max_batch_size
        self.end_token_id = self.tokenizer.convert_tokens_to_ids(END_TOKEN)

    def __repr__(self) -> str:
        state = "closed" if self.model is None else f"{self.model.device}, {self.model.dtype}"
        return f"TransformersEngine({self.model_path.name}, {state})"

    # -- the engine interface ---------------------------------------------------------------------------------
    def answer(self, image, question: str, settings: GenerationSettings | None = None) -> Answer:
        answer, _ = self.chat(image, question, None, settings)
        return answer

    def answer_batch(self, requests: Sequence[tuple], settings: GenerationSettings | None = None) -> list[Answer]:
        """Answers in the order of ``requests``; ``max_batch_size`` requests per ``batch_chat`` call, and
        text-only requests batched apart from those with an image (batch_chat takes one kind at a time)."""
        settings = settings or GenerationSettings()
        start = time.perf_counter()
        answers: list[Answer | None] = [None] * len(requests)
        groups = ([i for i, (image, _) in enumerate(requests) if image is not None],
                  [i for i, (image, _) in enumerate(requests) if image is None])
        step = self.max_batch_size or len(requests) or 1
        for group in groups:
            for first in range(0, len(group), step):
                rows = group[first:first + step]
                texts, counts = self._batch_chat([requests[i] for i in rows], settings)
                seconds = time.perf_counter() - start
                for row, text, count in zip(rows, texts, counts):
                    answers[row] = Answer(text, count, seconds)
        return answers

    def stream(self, image, question: str, settings: GenerationSettings | None = None,
               history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        settings = settings or GenerationSettings()
        pixel_values, question, config = self._prepare(image, question, history, settings)
        self._seed(settings)
        return stream_chat(self.model, self.tokenizer, pixel_values, question, config, history=history or None)

    def chat(self, image, question: str, history: list[tuple[str, str]] | None = None,
             settings: GenerationSettings | None = None) -> tuple[Answer, list[tuple[str, str]]]:
        settings = settings or GenerationSettings()
        start = time.perf_counter()
        pixel_values, question, config = self._prepare(image, question, history, settings)
        counter = TokenCounter(1, self.end_token_id)
        self._seed(settings)
        text, new_history = self.model.chat(self.tokenizer, pixel_values, question, dict(config, streamer=counter),
                                            history=list(history) if history else None, return_history=True)
        return Answer(text, counter.counts[0], time.perf_counter() - start), list(new_history)

    def kv_cache(self) -> None:
        """None: transformers grows each request's cache as it generates, nothing is reserved in advance."""
        return None

    def close(self) -> None:
        """Drop the model and tokenizer and give their memory back (GPU memory included)."""
        self.model = self.tokenizer = None
        free_memory()

    # -- helpers ----------------------------------------------------------------------------------------------
    def _check_open(self):
        if self.model is None:
            raise RuntimeError("this engine is closed: load_engine(...) again to use the model")

    def _tiles(self, image):
        return None if image is None else image_pixel_values(self.model, open_image(image), self.max_dynamic_patch)

    def _prepare(self, image, question, history, settings):
        """Tiles, the question with the image's place, and the generation config for one conversation turn."""
        self._check_open()
        pixel_values = self._tiles(image)
        question = place_image(question, history, pixel_values is not None)
        tiles = [] if pixel_values is None else [pixel_values.shape[0]]
        max_new_tokens = self._max_new_tokens(settings, [chat_prompt(self.model, question, tiles, history or None)])
        return pixel_values, question, self._config(settings, max_new_tokens)

    def _batch_chat(self, requests, settings):
        import torch

        self._check_open()
        tiles = [self._tiles(image) for image, _ in requests]
        with_images = tiles[0] is not None
        num_patches = [t.shape[0] for t in tiles] if with_images else [0] * len(requests)
        questions = [place_image(question, None, with_images) for _, question in requests]
        prompts = [chat_prompt(self.model, q, [n] if with_images else []) for q, n in zip(questions, num_patches)]
        counter = TokenCounter(len(requests), self.end_token_id)
        config = dict(self._config(settings, self._max_new_tokens(settings, prompts)), streamer=counter)
        self._seed(settings)
        texts = self.model.batch_chat(self.tokenizer, torch.cat(tiles) if with_images else None, questions, config,
                                      num_patches_list=num_patches)
        return texts, counter.counts

    def _max_new_tokens(self, settings, prompts) -> int:
        """``settings.max_new_tokens``, cut so that the longest prompt plus its answer fits in ``session_len``."""
        if self.session_len is None:
            return settings.max_new_tokens
        longest = max(len(self.tokenizer(prompt).input_ids) for prompt in prompts)
        if longest >= self.session_len:
            raise ValueError(f"the prompt is {longest} tokens (image tokens included) but session_len is "
                             f"{self.session_len}: raise session_len, or use fewer tiles (max_dynamic_patch)")
        return min(settings.max_new_tokens, self.session_len - longest)

    def _config(self, settings, max_new_tokens):
        pad = self.tokenizer.pad_token_id
        return dict(generation_config(settings, max_new_tokens),
                    pad_token_id=self.end_token_id if pad is None else pad)

    @staticmethod
    def _seed(settings):
        if settings.seed is not None:
            import torch

            torch.manual_seed(settings.seed)
