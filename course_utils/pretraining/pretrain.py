"""Pretrain the tiny base model on the picture corpus: the recipe behind the weights in ``course_utils/tiny_base/``.

The course's default model is InternVL2 in miniature, and like the real one it is *pretrained* before a lesson
fine-tunes it: every part (ViT, projector ``mlp1``, LLM) trains from random weights on :mod:`.corpus`, a
next-token loss on the answer only, each sample in exactly the prompt format the model is later served and
fine-tuned in (the tokenizer's chat template, which ``model.chat`` and XTuner's dataset write too).

    python -m course_utils pretrain-tiny-base OUT --device cuda      # the shipped recipe (minutes on one GPU)
    python -m course_utils pretrain-tiny-base OUT --steps 50         # a short run, e.g. on a CPU

``--ship`` also copies the weights and the record (recipe, seed, checksum, figures) into ``course_utils/
tiny_base/``. The same seed, steps and device give the same weights: the corpus is a function of (seed, index),
the order is fixed, and deterministic kernels are asked for.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CourseError
from .corpus import draw_sample

WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "pretraining.json"
IGNORE_INDEX = -100  # no loss at this position (the prompt), as in XTuner and transformers


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the pretrained weights (with the code and the device)."""

    seed: int = 0
    steps: int = 8000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 300
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0


def image_prompt(tokenizer, question: str, num_image_token: int) -> str:
    """The user turn rendered by the tokenizer's chat template, the image as ``<img>`` + placeholders + ``</img>``
    on its own line before the question (where ``model.chat``, LMDeploy and XTuner put it)."""
    placeholder = "<img>" + "<IMG_CONTEXT>" * num_image_token + "</img>"
    messages = [{"role": "user", "content": f"{placeholder}\n{question}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_sample(tokenizer, question: str, answer: str, num_image_token: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one sample: the prompt unlabelled, the answer and ``<|im_end|>`` labelled, each part
    tokenized on its own as XTuner's InternVL dataset does."""
    prompt = tokenizer.encode(image_prompt(tokenizer, question, num_image_token), add_special_tokens=False)
    reply = tokenizer.encode(answer + "<|im_end|>", add_special_tokens=False)
    return prompt + reply, [IGNORE_INDEX] * len(prompt) + reply


class CorpusDataset:
    """Samples ``start`` .. ``start + length - 1`` of the corpus of ``seed``, as model inputs (a map-style dataset:
    DataLoader workers draw pictures in parallel)."""

    def __init__(self, tokenizer, seed: int, length: int, image_size: int, num_image_token: int, start: int = 0):
        self.tokenizer, self.seed, self.length, self.start = tokenizer, seed, length, start
        self.image_size, self.num_image_token = image_size, num_image_token
        self._pixels = (None, None)  # (picture number, its tile) of the last sample

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        from ..internvl.preprocessing import load_image

        sample = draw_sample(self.seed, self.start + index)
        input_ids, labels = encode_sample(self.tokenizer, sample.question, sample.answer, self.num_image_token)
        if self._pixels[0] != sample.picture:  # consecutive samples share a picture: its tile is made once
            self._pixels = (sample.picture, load_image(sample.image, self.image_size, max_num=1))  # (1, 3, S, S)
        return input_ids, labels, self._pixels[1]


def collate(batch, pad_id: int):
    """Right-padded (input_ids, labels, attention_mask, pixel_values) tensors of a list of samples."""
    import torch

    width = max(len(ids) for ids, _, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, row_labels, _) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(ids)] = torch.tensor(row_labels)
        attention_mask[row, :len(ids)] = 1
    return input_ids, labels, attention_mask, torch.cat([pixels for _, _, pixels in batch])


def learning_rate(step: int, recipe: Recipe) -> float:
    """Linear warmup to ``recipe.lr``, then cosine decay to 0 at the last step (``step`` counts from 0)."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(model_dir: Path, recipe: Recipe, device: str = "cpu", workers: int | None = None,
             log=print) -> list[dict]:
    """Train the model folder ``model_dir`` (built with random weights) in place; returns the mean loss of every
    tenth of the run (at most every 100 steps)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from ..internvl import InternVLChatConfig, InternVLChatModel

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers tokenize; no threads before their fork
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = InternVLChatConfig.from_pretrained(model_dir)
    model = InternVLChatModel.from_pretrained(model_dir, config=config, torch_dtype=torch.float32).to(device).train()
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    dataset = CorpusDataset(tokenizer, recipe.seed, recipe.steps * recipe.batch_size, config.force_image_size,
                            model.num_image_token)
    workers = max(1, (os.cpu_count() or 2) - 1) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=recipe.batch_size, shuffle=False, num_workers=workers,
        collate_fn=functools.partial(collate, pad_id=tokenizer.pad_token_id), persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98))
    log_every = max(1, min(100, recipe.steps // 10))
    losses, window, start = [], [], time.perf_counter()
    for step, (input_ids, labels, attention_mask, pixel_values) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, recipe)
        outputs = model(pixel_values=pixel_values.to(device), input_ids=input_ids.to(device),
                        attention_mask=attention_mask.to(device), labels=labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        optimizer.step()
        window.append(outputs.loss.item())
        if (step + 1) % log_every == 0 or step + 1 == recipe.steps:
            losses.append({"step": step + 1, "loss": round(sum(window) / len(window), 4),
                           "seconds": round(time.perf_counter() - start, 1)})
            log(f"step {step + 1}/{recipe.steps}  loss {losses[-1]['loss']:.4f}  {losses[-1]['seconds']:.0f} s")
            window = []
    state = {name: value.detach().to("cpu", torch.bfloat16).contiguous()
             for name, value in model.state_dict().items()}
    save_file(state, str(model_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    return losses


def pretrain_tiny_base(out: str | Path, recipe: Recipe = Recipe(), device: str = "cpu", evaluate: bool = True,
                       force: bool = False, workers: int | None = None, log=print) -> dict:
    """Build the tiny model with random weights at ``out``, pretrain it and write its record; returns the record."""
    from ..tiny_model import BUILD_INFO_FILE, build_model_dir, check_device, file_sha256

    check_device(device)
    started = time.perf_counter()
    model_dir = build_model_dir(out, preset="tiny", seed=recipe.seed, force=force)
    losses = pretrain(model_dir, recipe, device, workers=workers, log=log)
    build_info = json.loads((model_dir / BUILD_INFO_FILE).read_text())
    build_info["weights_sha256"] = file_sha256(model_dir / WEIGHTS_FILE)  # as build_model_dir(weights=...) writes
    (model_dir / BUILD_INFO_FILE).write_text(json.dumps(build_info, indent=2) + "\n")
    record = {"recipe": asdict(recipe), "device": device_name(device), "torch": torch_version(),
              "python": platform.python_version(), "seconds": round(time.perf_counter() - started, 1),
              "losses": losses, "weights_sha256": build_info["weights_sha256"]}
    if evaluate:
        from .evaluate import evaluate_base

        record["evaluation"] = evaluate_base(model_dir, device=device)
    (model_dir / RECORD_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"


def torch_version() -> str:
    import torch

    return torch.__version__


def ship(model_dir: Path) -> Path:
    """Copy a pretrained folder's weights and record into ``course_utils/tiny_base/`` (the repository's copy)."""
    from ..tiny_model import TINY_BASE_DIR, file_sha256

    record = json.loads((model_dir / RECORD_FILE).read_text(encoding="utf-8"))
    if file_sha256(model_dir / WEIGHTS_FILE) != record["weights_sha256"]:
        raise CourseError(f"{model_dir / WEIGHTS_FILE} does not match its record's checksum")
    TINY_BASE_DIR.mkdir(exist_ok=True)
    shutil.copy2(model_dir / WEIGHTS_FILE, TINY_BASE_DIR / WEIGHTS_FILE)
    shutil.copy2(model_dir / RECORD_FILE, TINY_BASE_DIR / RECORD_FILE)
    return TINY_BASE_DIR


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain-tiny-base", help="pretrain the tiny base model on the picture corpus (the recipe of the shipped "
                                   "weights; minutes on a GPU)")
    parser.add_argument("out", help="output model folder (new, empty, or one the course made)")
    defaults = Recipe()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the shipped recipe")
    parser.add_argument("--workers", type=int, default=None, help="processes drawing pictures (default: cores - 1)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation at the end")
    parser.add_argument("--ship", action="store_true", help="copy weights and record into course_utils/tiny_base/")
    parser.add_argument("--force", action="store_true", help="replace OUT even if the course did not make it")
    parser.set_defaults(handler=_pretrain_cli)


def _pretrain_cli(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.batch_size < 1:
        raise ValueError("--steps and --batch-size must be at least 1")
    recipe = Recipe(seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                    warmup_steps=min(Recipe.warmup_steps, max(1, args.steps // 10)))
    record = pretrain_tiny_base(args.out, recipe, args.device, evaluate=not args.no_evaluate, force=args.force,
                                workers=args.workers)
    print(f"pretrained {args.out} in {record['seconds']:.0f} s: loss {record['losses'][0]['loss']:.3f} -> "
          f"{record['losses'][-1]['loss']:.3f}")
    if "evaluation" in record:
        print(json.dumps(record["evaluation"]["summary"], indent=1, ensure_ascii=False))
    if args.ship:
        print(f"shipped to {ship(Path(args.out))}")
    return 0
