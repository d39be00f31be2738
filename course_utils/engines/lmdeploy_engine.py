"""The LMDeploy backends: ``lmdeploy.pipeline`` with its PyTorch engine (``PytorchEngineConfig``, the engine the
course checks on a GPU) or TurboMind (``TurbomindEngineConfig``, the original lesson's default; the course's GPU
machine cannot run it, so that path stays thin). CUDA only.

LMDeploy 0.10 takes the conversation format from the model folder's tokenizer (``chat_template`` in
``tokenizer_config.json``), and preprocesses images itself (dynamic tiling up to ``max_dynamic_patch``). Requests
are sent in OpenAI's message format with the model card's system message, so both backends see the same prompt.

Scripts that start LMDeploy need an ``if __name__ == "__main__":`` guard (it may start worker processes).

On several GPUs (``tp`` > 1) the PyTorch engine runs the model in worker processes of its own, one per GPU, through
Python's ``multiprocessing`` (``executor="mp"``; LMDeploy would otherwise take Ray, a cluster manager a single
machine does not need). A model folder's remote-code config travels to those workers and back only with
:func:`pickle_remote_code_configs_by_loading`.
"""

from __future__ import annotations

import copyreg
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from .interface import (Answer, GenerationSettings, cuda_available, free_memory, open_image, place_image,
                        split_image_placeholder)
from .kv_cache import QUANT_POLICIES

ENGINES = ("lmdeploy", "turbomind")  # "lmdeploy" is LMDeploy's PyTorch engine
DTYPES = ("auto", "bfloat16", "float16")
EXECUTORS = ("uni", "mp", "ray")  # the PyTorch engine's: in this process (one GPU only), worker processes, Ray


def check_chat_template(model_path: str | Path) -> str:
    """The model folder's chat template; ValueError naming the fix when it has none (LMDeploy 0.10 needs it)."""
    config_file = Path(model_path) / "tokenizer_config.json"
    try:
        template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    except FileNotFoundError:
        template = None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}): copy it again from the base model") from error
    if not template:
        raise ValueError(
            f"{config_file} has no chat_template: LMDeploy 0.10 takes the conversation format from it and would "
            "answer in the wrong format. Copy tokenizer_config.json from the base model (InternVL2-2B's has the "
            "InternLM2 template) into this folder, or use backend='transformers'")
    return template


def cache_special_token_ids(tokenizer) -> None:
    """Make the Hugging Face tokenizer inside LMDeploy's ``tokenizer`` (a pipeline's ``.tokenizer``) answer
    ``all_special_ids`` from a stored list instead of a property that converts every special token again at each
    call. LMDeploy's incremental detokenizer asks for it once per new token of every request (to drop special tokens
    from the text), so a batch of 32 spent about a quarter of LMDeploy's engine thread in it. The special tokens do
    not change after loading; the text is the same."""
    hf_tokenizer = tokenizer.model.model  # LMDeploy's Tokenizer -> its Hugging Face wrapper -> the tokenizer
    ids = list(hf_tokenizer.all_special_ids)
    base = type(hf_tokenizer)
    hf_tokenizer.__class__ = type(base.__name__, (base,), {"all_special_ids": property(lambda self: ids)})


def backend_config(engine: str = "lmdeploy", *, dtype: str = "auto", session_len: int | None = None,
                   cache_max_entry_count: float | None = None, max_batch_size: int | None = None, tp: int = 1,
                   executor: str | None = None, quant_policy: int | None = None):
    """``PytorchEngineConfig`` (engine "lmdeploy") or ``TurbomindEngineConfig`` ("turbomind") with the course's
    knobs; None keeps LMDeploy's default (session_len: the model's context; cache: 0.8; batch: by GPU; KV cache:
    16-bit, ``quant_policy`` 0).

    ``executor`` (PyTorch engine): where the model runs, one of :data:`EXECUTORS`; None is LMDeploy's "uni" on one
    GPU and the course's "mp" on several."""
    from lmdeploy import PytorchEngineConfig, TurbomindEngineConfig

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if dtype not in DTYPES:
        raise ValueError(f"LMDeploy computes in bfloat16 or float16: dtype must be one of {', '.join(DTYPES)} "
                         f"(got {dtype!r})")
    if executor is not None and (engine != "lmdeploy" or executor not in EXECUTORS):
        raise ValueError(f"executor is the PyTorch engine's (engine='lmdeploy'), one of {', '.join(EXECUTORS)} "
                         f"(got engine={engine!r}, executor={executor!r})")
    if quant_policy not in (None, *QUANT_POLICIES):
        raise ValueError(f"quant_policy is 0 (16-bit KV cache), 8 or 4 (bits) (got {quant_policy!r})")
    knobs = dict(dtype=dtype, tp=tp, session_len=session_len, max_batch_size=max_batch_size,
                 cache_max_entry_count=cache_max_entry_count, quant_policy=quant_policy)
    if engine == "lmdeploy":
        knobs["distributed_executor_backend"] = executor or ("mp" if tp > 1 else None)
    knobs = {name: value for name, value in knobs.items() if value is not None}  # None: LMDeploy's own default
    config_class = PytorchEngineConfig if engine == "lmdeploy" else TurbomindEngineConfig
    return config_class(**knobs)


def rebuild_remote_code_config(module_file: str, class_name: str, state: dict):
    """Unpickle a remote-code config, loading its class as transformers loads it (see
    :func:`pickle_remote_code_configs_by_loading`); ``module_file`` is relative to transformers' module cache."""
    from transformers.dynamic_module_utils import get_class_in_module, init_hf_modules

    init_hf_modules()  # the cache folder on sys.path, for the module's relative imports
    cls = get_class_in_module(class_name, module_file)
    config = cls.__new__(cls)
    config.__dict__.update(state)
    return config


def reduce_remote_code_config(config):
    from transformers.utils import HF_MODULES_CACHE

    module_file = os.path.relpath(sys.modules[type(config).__module__].__file__, HF_MODULES_CACHE)
    return rebuild_remote_code_config, (module_file, type(config).__name__, dict(config.__dict__))


def pickle_remote_code_configs_by_loading(config) -> None:
    """Let ``config``, a model folder's remote-code config (``AutoConfig`` with ``trust_remote_code=True``), and its
    sub-configs be pickled to LMDeploy's worker processes and back.

    A worker started by ``multiprocessing`` unpickles the config by importing its module with Python's own import.
    When the worker then loads the model, transformers finds that module without its hash mark, executes it again,
    and the class changes under the config the worker holds, which then cannot be pickled back ("Can't pickle
    <class '...InternVLChatConfig'>: it's not the same object as ..."): the engine hung at start. Pickled through
    :func:`rebuild_remote_code_config`, the worker loads the class the way transformers does, and the later load
    finds it and keeps it. Works for any remote code (the course's, OpenGVLab's): only its class names are used.
    """
    from transformers import PretrainedConfig

    pending = [config]
    while pending:
        current = pending.pop()
        if type(current).__module__.startswith("transformers_modules."):
            copyreg.pickle(type(current), reduce_remote_code_config)
        pending += [value for value in vars(current).values() if isinstance(value, PretrainedConfig)]


def generation_config(settings: GenerationSettings):
    """The settings as LMDeploy's ``GenerationConfig`` (greedy: ``do_sample=False``, which LMDeploy runs as top-1)."""
    from lmdeploy import GenerationConfig

    return GenerationConfig(max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy,
                            temperature=settings.temperature if not settings.greedy else 1.0,
                            top_p=settings.top_p, top_k=settings.top_k,
                            repetition_penalty=settings.repetition_penalty, random_seed=settings.seed)


def user_message(question: str, image, max_dynamic_patch: int | None) -> dict:
    """One user turn in OpenAI's format as LMDeploy reads it; the image goes where ``<image>`` was (LMDeploy puts
    it in front of the text, as the model card does), with its tile limit."""
    text, has_placeholder = split_image_placeholder(question)
    if not has_placeholder:
        return dict(role="user", content=question)
    if image is None:
        raise ValueError("this conversation is about an image: pass the same image again with every turn")
    image_data = dict(data=open_image(image))
    if max_dynamic_patch is not None:
        image_data["max_dynamic_patch"] = max_dynamic_patch
    return dict(role="user", content=[dict(type="text", text=text), dict(type="image_data", image_data=image_data)])


def conversation_messages(system_message: str | None, image, question: str, history=None,
                          max_dynamic_patch: int | None = None) -> list[dict]:
    """The whole conversation (system message, earlier turns, this question) as LMDeploy's messages."""
    messages = [dict(role="system", content=system_message)] if system_message else []
    for old_question, old_answer in history or []:
        messages += [user_message(old_question, image, max_dynamic_patch), dict(role="assistant", content=old_answer)]
    return messages + [user_message(question, image, max_dynamic_patch)]


def model_system_message(model_path: str | Path) -> str | None:
    """The system message ``model.chat`` uses for this folder: its config's conversation template's."""
    from ..internvl.conversation import get_conv_template

    template = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8")).get("template")
    return get_conv_template(template).system_message if template else None


class LMDeployEngine:
    """An LMDeploy pipeline behind the course's engine interface."""

    def __init__(self, model_path: Path, *, engine: str = "lmdeploy", dtype: str = "auto",
                 max_dynamic_patch: int | None = None, session_len: int | None = None,
                 cache_max_entry_count: float | None = None, max_batch_size: int | None = None, tp: int = 1,
                 vision_batch_size: int | None = None, executor: str | None = None, quant_policy: int | None = None):
        if not cuda_available():
            raise RuntimeError("LMDeploy needs a CUDA GPU and torch sees none: use backend='transformers' "
                               "(or 'auto', which picks it here)")
        from lmdeploy import VisionConfig, pipeline

        self.model_path = Path(model_path)
        check_chat_template(self.model_path)
        self.backend = engine
        self.max_dynamic_patch = max_dynamic_patch
        self.system_message = model_system_message(self.model_path)
        self.backend_config = backend_config(engine, dtype=dtype, session_len=session_len,
                                             cache_max_entry_count=cache_max_entry_count,
                                             max_batch_size=max_batch_size, tp=tp, executor=executor,
                                             quant_policy=quant_policy)
        if getattr(self.backend_config, "distributed_executor_backend", None) == "mp":
            from transformers import AutoConfig

            pickle_remote_code_configs_by_loading(AutoConfig.from_pretrained(self.model_path, trust_remote_code=True))
        self.pipe = pipeline(str(self.model_path), backend_config=self.backend_config, log_level="ERROR",
                             vision_config=VisionConfig(max_batch_size=vision_batch_size or 1))
        cache_special_token_ids(self.pipe.tokenizer)

    def __repr__(self) -> str:
        return f"LMDeployEngine({self.model_path.name}, {self.backend}{', closed' if self.pipe is None else ''})"

    def answer(self, image, question: str, settings: GenerationSettings | None = None) -> Answer:
        return self.answer_batch([(image, question)], settings)[0]

    def answer_batch(self, requests: Sequence[tuple], settings: GenerationSettings | None = None) -> list[Answer]:
        """All requests at once: LMDeploy schedules them (continuous batching, ``max_batch_size`` at a time)."""
        conversations = [self._messages(image, question, None) for image, question in requests]
        start = time.perf_counter()
        responses = self._pipe()(conversations, gen_config=generation_config(settings or GenerationSettings()))
        seconds = time.perf_counter() - start
        return [self._answer(response, seconds) for response in responses]

    def stream(self, image, question: str, settings: GenerationSettings | None = None,
               history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        messages = self._messages(image, question, history)
        gen_config = generation_config(settings or GenerationSettings())
        for response in self._pipe().stream_infer(messages, gen_config=gen_config):
            self._check(response)
            if response.text:
                yield response.text

    def chat(self, image, question: str, history: list[tuple[str, str]] | None = None,
             settings: GenerationSettings | None = None) -> tuple[Answer, list[tuple[str, str]]]:
        question = place_image(question, history, image is not None)
        start = time.perf_counter()
        response = self._pipe()(self._messages(image, question, history),
                                gen_config=generation_config(settings or GenerationSettings()))
        answer = self._answer(response, time.perf_counter() - start)
        return answer, list(history or []) + [(question, answer.text)]

    def kv_cache(self) -> dict | None:
        """The KV cache LMDeploy's PyTorch engine allocated: blocks of ``block_size`` tokens (None for TurboMind,
        which does not report it here)."""
        config = self._pipe().backend_config
        blocks, block_size = getattr(config, "num_gpu_blocks", 0), getattr(config, "block_size", 0)
        return {"blocks": blocks, "block_size": block_size, "tokens": blocks * block_size} if blocks else None

    def close(self) -> None:
        """Stop LMDeploy's engine and give its weights and KV cache back to the GPU."""
        if self.pipe is not None:
            self.pipe.close()
        self.pipe = None
        free_memory()

    def _pipe(self):
        if self.pipe is None:
            raise RuntimeError("this engine is closed: load_engine(...) again to use the model")
        return self.pipe

    def _messages(self, image, question, history):
        question = place_image(question, history, image is not None)
        return conversation_messages(self.system_message, image, question, history, self.max_dynamic_patch)

    @staticmethod
    def _check(response):
        if response.finish_reason == "error":  # e.g. a prompt longer than session_len
            raise RuntimeError(f"LMDeploy refused the request: {response.text} (session_len, max_dynamic_patch "
                               "and max_new_tokens decide how long a request may be)")

    def _answer(self, response, seconds: float) -> Answer:
        self._check(response)
        return Answer(response.text.strip(), response.generate_token_len, seconds)
