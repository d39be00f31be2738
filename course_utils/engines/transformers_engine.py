"""The transformers backend: any InternVL2 folder (the course's code or OpenGVLab's remote code) through the model
card's own API - the model's ``generate`` on the prompts ``model.chat`` builds, and the model card's streaming
recipe - on the CPU or a GPU. Whatever makes the model's ``generate`` fast makes this engine fast.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from ..chat import AnswerStreamer, chat_prompt, image_pixel_values, load_model, stream_chat
from .interface import Answer, GenerationSettings, free_memory, open_image, place_image, warn_lmdeploy_only

DTYPES = ("auto", "bfloat16", "float16", "float32")
END_TOKEN = "<|im_end|>"  # InternLM2's end of turn: where model.chat and batch_chat stop
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"


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
                 vision_batch_size: int | None = None, quant_policy: int | None = None):
        if tp != 1:
            raise ValueError("the transformers engine runs on one device (tp=1); tensor parallelism needs LMDeploy")
        warn_lmdeploy_only("the transformers engine", cache_max_entry_count=cache_max_entry_count,
                           vision_batch_size=vision_batch_size, quant_policy=quant_policy)
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
        """Answers in the order of ``requests``: ``max_batch_size`` requests (all by default) per ``generate``
        call, left-padded as in ``batch_chat``; requests with and without an image can share a batch."""
        settings = settings or GenerationSettings()
        start = time.perf_counter()
        answers = []
        step = self.max_batch_size or len(requests) or 1
        for first in range(0, len(requests), step):
            chunk = requests[first:first + step]
            turns = [self.turn(image, question, None) for image, question in chunk]
            texts, counts = self._generate(turns, settings)
            seconds = time.perf_counter() - start
            answers += [Answer(text, count, seconds) for text, count in zip(texts, counts)]
        return answers

    def stream(self, image, question: str, settings: GenerationSettings | None = None,
               history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        """The model card's streaming recipe (``model.chat`` with a ``TextIteratorStreamer``)."""
        return self.stream_turn(self.turn(image, question, history), settings, history)

    # -- for a server: a turn's length is known before it is generated, and its generation can be cancelled ----
    @property
    def context_length(self) -> int:
        """The most tokens a conversation may hold (prompt with image tokens + answer): ``session_len`` when set,
        else the language model's own limit."""
        return self.session_len or self.model.config.llm_config.max_position_embeddings

    def turn(self, image, question, history, max_dynamic_patch: int | None = None):
        """One conversation turn: the image's tiles (or None), the question as the history stores it, the prompt.
        ``max_dynamic_patch`` overrides the engine's for this image (LMDeploy's per-image setting)."""
        if self.model is None:
            raise RuntimeError("this engine is closed: load_engine(...) again to use the model")
        tiles = None if image is None else image_pixel_values(self.model, open_image(image),
                                                              max_dynamic_patch or self.max_dynamic_patch)
        question = place_image(question, history, tiles is not None)
        prompt = chat_prompt(self.model, question, [] if tiles is None else [tiles.shape[0]], history or None)
        return tiles, question, prompt

    def prompt_tokens(self, turn) -> int:
        """How many tokens the turn's prompt is, image tokens included."""
        return len(self.tokenizer(turn[2]).input_ids)

    def answer_streamer(self, text: bool = True) -> AnswerStreamer:
        """A streamer that counts the answer's tokens and can cancel it (:class:`course_utils.chat.AnswerStreamer`)."""
        return AnswerStreamer(self.tokenizer, self.end_token_id, text=text)

    def answer_turn(self, turn, settings: GenerationSettings | None = None,
                    streamer: AnswerStreamer | None = None) -> Answer:
        """The whole answer to a turn made by :meth:`turn`, as :meth:`chat` gives it; ``streamer`` (one made with
        ``text=False``) counts its tokens, and cancelling it raises GenerationCancelled here."""
        start = time.perf_counter()
        (text,), (count,) = self._generate([turn], settings or GenerationSettings(), streamer)
        return Answer(text, count, time.perf_counter() - start)

    def stream_turn(self, turn, settings: GenerationSettings | None = None,
                    history: list[tuple[str, str]] | None = None, streamer: AnswerStreamer | None = None
                    ) -> Iterator[str]:
        """:meth:`stream` for a turn made by :meth:`turn`, through ``streamer`` when one is given."""
        settings = settings or GenerationSettings()
        pixel_values, question, prompt = turn
        config = self._config(settings, [self.prompt_tokens(turn)] if self.session_len else [])
        self._seed(settings)
        return stream_chat(self.model, self.tokenizer, pixel_values, question, config, history=history or None,
                           streamer=streamer or self.answer_streamer())

    def chat(self, image, question: str, history: list[tuple[str, str]] | None = None,
             settings: GenerationSettings | None = None) -> tuple[Answer, list[tuple[str, str]]]:
        """One turn: the prompt ``model.chat`` builds for ``history`` + ``question``, answered by ``generate``."""
        start = time.perf_counter()
        turn = self.turn(image, question, history)
        answer = replace(self.answer_turn(turn, settings), seconds=time.perf_counter() - start)  # tiling included
        return answer, list(history or []) + [(turn[1], answer.text)]

    def kv_cache(self) -> None:
        """None: no cache pool is reserved when the model loads; each batch's decode loop allocates a static cache
        for that batch's shape (rounded up to 64 tokens) and reuses it for the next batch of that shape."""
        return None

    def close(self) -> None:
        """Drop the model and tokenizer and give their memory back (GPU memory included)."""
        self.model = self.tokenizer = None
        free_memory()

    # -- helpers ----------------------------------------------------------------------------------------------
    def _generate(self, turns, settings, streamer=None) -> tuple[list[str], list[int]]:
        """The model's ``generate`` on the turns' left-padded prompts (every row continues from the last column):
        each answer's text and its token count, both cut at the end token as ``model.chat`` cuts them. ``streamer``
        (one turn only) sees the tokens as they come."""
        import torch

        tokenizer = self.tokenizer
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            inputs = tokenizer([prompt for _, _, prompt in turns], return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = padding_side
        tiles = [t for t, _, _ in turns if t is not None]
        config = self._config(settings, inputs["attention_mask"].sum(dim=1).tolist())
        if streamer is not None:
            config["streamer"] = streamer
        self.model.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)  # as model.chat sets it
        self._seed(settings)
        output = self.model.generate(pixel_values=torch.cat(tiles) if tiles else None,
                                     input_ids=inputs["input_ids"].to(self.model.device),
                                     attention_mask=inputs["attention_mask"].to(self.model.device),
                                     eos_token_id=self.end_token_id, **config)
        rows = [row[:row.index(self.end_token_id)] if self.end_token_id in row else row for row in output.tolist()]
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows], [len(row) for row in rows]

    def _config(self, settings, prompt_lengths):
        """The generate() arguments; ``max_new_tokens`` cut so that the longest prompt and its answer fit in
        ``session_len``."""
        max_new_tokens = settings.max_new_tokens
        if self.session_len is not None:
            longest = max(prompt_lengths)
            if longest >= self.session_len:
                raise ValueError(f"the prompt is {longest} tokens (image tokens included) but session_len is "
                                 f"{self.session_len}: raise session_len, or use fewer tiles (max_dynamic_patch)")
            max_new_tokens = min(max_new_tokens, self.session_len - longest)
        pad = self.tokenizer.pad_token_id
        return dict(generation_config(settings, max_new_tokens), pad_token_id=self.end_token_id if pad is None else pad)

    @staticmethod
    def _seed(settings):
        if settings.seed is not None:
            import torch

            torch.manual_seed(settings.seed)
