"""One way to talk to an InternVL2 model, whatever runs it: LMDeploy on a GPU, or transformers anywhere.

``load_engine(model_path, backend="auto")`` (:mod:`.loader`) returns an engine with the same methods for every
backend:

    engine.answer(image, question)                     -> Answer(text, output_tokens, seconds)
    engine.answer_batch([(image, question), ...])      -> [Answer, ...]
    engine.stream(image, question)                     -> the answer's text pieces as they are written
    engine.chat(image, question, history)              -> (Answer, history)   history: [(question, answer), ...]
    engine.kv_cache()                                  -> the KV cache reserved up front (LMDeploy), or None
    engine.close()                                     -> frees the model (and its GPU memory)

``image`` is a path, a PIL image or None (text only). A conversation's history keeps the image's place as the
model card does: the first question of a conversation about an image starts with ``<image>\\n``; pass the same
image again with every later turn.

This module imports no heavy library at import time: ``choose_backend()`` is cheap enough for ``doctor``. It
imports neither backend: they import it, and :mod:`.loader` imports them.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence

IMAGE_PLACEHOLDER = "<image>"

# The knobs a learner meets first, each with the line the lesson prints next to it.
KNOBS = {
    "dtype": "number format of the weights: 'auto' is bfloat16 on a GPU and float32 on the CPU",
    "max_dynamic_patch": "most tiles per image (plus a thumbnail): more tiles see finer detail but cost "
                         "256 tokens each on InternVL2",
    "session_len": "longest conversation in tokens (prompt with image tokens + answer) the engine accepts",
    "cache_max_entry_count": "LMDeploy: share of the GPU memory left after loading the weights that becomes "
                             "KV cache blocks (more blocks: more or longer requests in flight)",
    "max_batch_size": "most requests decoded together in one step (LMDeploy), or per batch (transformers)",
    "quant_policy": "LMDeploy: the KV cache as 16-bit numbers (0, the default), 8-bit (8) or 4-bit integers (4): "
                    "about 2x or 4x the tokens in the same memory, for a little accuracy",
    "vision_batch_size": "TurboMind: most images its vision encoder reads in one go (1 by default); LMDeploy's "
                         "PyTorch engine encodes images inside its own prefill and does not use it",
}


@dataclass(frozen=True)
class GenerationSettings:
    """How an answer is generated. ``temperature=0.0`` is greedy decoding (the other sampling knobs are unused).

    ``top_k=0`` and ``top_p=1.0`` switch those filters off; ``seed`` makes sampled answers repeatable.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append(f"temperature must be between 0.0 (greedy) and 2.0 (got {self.temperature})")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            problems.append(f"top_k must be 0 (off) or positive (got {self.top_k})")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be positive, 1.0 is none (got {self.repetition_penalty})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """One answer: its text, how many tokens the model generated for it, and the seconds from the call's start
    until it was complete (for a batch: until its batch was complete)."""

    text: str
    output_tokens: int
    seconds: float


class Engine(Protocol):
    """What every backend offers (see the module docstring)."""

    backend: str
    model_path: Path

    def answer(self, image, question: str, settings: GenerationSettings | None = None) -> Answer: ...

    def answer_batch(self, requests: Sequence[tuple], settings: GenerationSettings | None = None) -> list[Answer]: ...

    def stream(self, image, question: str, settings: GenerationSettings | None = None,
               history: list[tuple[str, str]] | None = None) -> Iterator[str]: ...

    def chat(self, image, question: str, history: list[tuple[str, str]] | None = None,
             settings: GenerationSettings | None = None) -> tuple[Answer, list[tuple[str, str]]]: ...

    def kv_cache(self) -> dict | None: ...

    def close(self) -> None: ...


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (False where torch itself is missing)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_backend(cuda: bool | None = None, lmdeploy_installed: bool | None = None) -> tuple[str, str]:
    """The backend ``backend="auto"`` picks on this machine, and why: LMDeploy when CUDA and LMDeploy are both
    present, else the course's transformers engine. The arguments override what is observed (for tests)."""
    cuda = cuda_available() if cuda is None else cuda
    if lmdeploy_installed is None:
        lmdeploy_installed = importlib.util.find_spec("lmdeploy") is not None
    if cuda and lmdeploy_installed:
        return "lmdeploy", "CUDA GPU and LMDeploy found: LMDeploy's PyTorch engine"
    if cuda:
        return "transformers", "CUDA GPU found but LMDeploy is not installed (`make env` installs it)"
    return "transformers", "no CUDA GPU: LMDeploy needs one, the course's transformers engine runs on the CPU"


def warn_lmdeploy_only(who: str, **knobs) -> None:
    """One warning naming the LMDeploy-only knobs that were set but that ``who`` does not use."""
    unused = [name for name, value in knobs.items() if value is not None]
    if unused:
        warnings.warn(f"{', '.join(unused)}: LMDeploy settings, unused by {who}", stacklevel=3)


def open_image(image):
    """A path or PIL image as an RGB PIL image; a missing or unreadable file is one clear ValueError."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:  # FileNotFoundError is an OSError
        raise ValueError(f"cannot read the image {image}: {error}") from error


def split_image_placeholder(question: str) -> tuple[str, bool]:
    """``question`` without its ``<image>`` placeholder, and whether it had one."""
    if IMAGE_PLACEHOLDER not in question:
        return question, False
    placeholder = IMAGE_PLACEHOLDER + "\n" if IMAGE_PLACEHOLDER + "\n" in question else IMAGE_PLACEHOLDER
    return question.replace(placeholder, "", 1), True


def place_image(question: str, history: list[tuple[str, str]] | None, has_image: bool) -> str:
    """The question as the conversation stores it: ``<image>\\n`` in front when an image comes with it and no
    earlier turn already holds the image's place (the model card's rule, shared by every backend)."""
    if not has_image or IMAGE_PLACEHOLDER in question:
        return question
    if any(IMAGE_PLACEHOLDER in old_question for old_question, _ in history or []):
        return question
    return f"{IMAGE_PLACEHOLDER}\n{question}"


def free_memory() -> None:
    """Collect what nothing refers to any more, and hand PyTorch's cached GPU blocks back to the driver."""
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def memory_in_use() -> dict[str, int]:
    """This process's resident memory, and on a GPU what torch holds and what the whole device has in use
    (LMDeploy's TurboMind allocates outside torch, so only the device figure sees it), in bytes."""
    import psutil

    figures = {"rss_bytes": psutil.Process(os.getpid()).memory_info().rss}
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            figures["cuda_allocated_bytes"] = torch.cuda.memory_allocated()
            figures["cuda_device_used_bytes"] = total - free
    return figures
