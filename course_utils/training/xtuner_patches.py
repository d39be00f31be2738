"""What XTuner 0.2.0 needs to train on a CPU, on a GPU without DeepSpeed and on another number of GPUs when
resuming: every change in one module.

The course's XTuner configs load this module through mmengine's ``custom_imports``, so it is imported by
``xtuner train`` itself (in the training process, before the config is used) and nothing is ever copied into
site-packages. Each adaptation answers a failure measured with the stock InternVL2 config:

* ``torch.distributed.get_rank()`` without a process group raised "Default process group has not been
  initialized" (XTuner's ``InternVL_V1_5._llm_forward`` calls it in a single-process run): answer rank 0;
* resuming failed with "Weights only load failed ... HistoryBuffer" (torch >= 2.6 unpickles checkpoints with
  ``weights_only=True``), and from a DeepSpeed checkpoint with "... ConfigDict" (XTuner reads the seed from its
  model states): the classes mmengine stores in a checkpoint are allow-listed, and its one use of
  ``getattr`` (a ``HistoryBuffer`` statistics method) is answered by a ``getattr`` that allows only that;
* ``warmup_ratio * max_epochs`` rounded to 0 iterations on a short run ("end should be larger than begin"), and
  a 1-iteration warmup never ramps up: :class:`WarmupLinearLR` / :class:`CosineAfterWarmupLR` make any
  positive warmup at least 2 iterations;
* :class:`CourseInternVL` is XTuner's ``InternVL_V1_5`` with two switches: float32 weights on a CPU (XTuner
  loads bf16, which a CPU without bf16 instructions emulates slowly and which rounds away small updates) and
  gradient checkpointing that can be turned off (it recomputes every forward pass: worth it for memory on a
  GPU, pure cost for a tiny model on a CPU), and a forward that computes the loss from the labelled positions
  only: XTuner's float32 logits over the vocabulary at every position, image positions included, took most of
  the 2B LoRA recipe's peak (batch 4 of 800x600 photos, ZeRO-2, an H100: 24.2 GB with XTuner's forward, 12.4 GB
  with this one);
* :class:`CourseInternVLDataset` is XTuner's ``InternVL_V1_5_Dataset`` with the image tiling and the system
  message as arguments: XTuner takes the tiling from the model's config and uses InternLM2's system message,
  while the model answers (``chat``/``batch_chat``, LMDeploy) with InternVL's own: train with the prompt you serve;
* :func:`scalar_visualizer` adds TensorBoard's backend to mmengine's scalar log when tensorboard is installed;
* several processes on a CPU (``torchrun``, gloo) failed with "Found no NVIDIA driver": mmengine's ``pytorch``
  launcher calls ``torch.cuda.set_device`` unconditionally, which is skipped where there is no CUDA;
* ``xtuner train CONFIG --deepspeed deepspeed_zero2`` typed in a terminal failed on a CPU (XTuner's ``"auto"``
  precision asks ``torch.cpu.is_bf16_supported``, which torch lacks, and turns fp16 on for any device) and on one
  process (DeepSpeed looks for MPI without ``RANK``/``WORLD_SIZE``): :class:`CourseDeepSpeedStrategy`;
* :class:`ValidationLoss` logs the loss on lesson 03's held-out dishes before training and after every epoch;
* a run resumed on another number of GPUs went on at the saved step on the saved schedule, although its epochs
  now have another number of steps: :class:`ResumeAtSamePlace` moves it to the same place in its data and
  schedule.

The optimizer wrapper needs no code: the configs use mmengine's plain ``OptimWrapper`` (the stock fp16
``AmpOptimWrapper`` fails on a CPU and, with XTuner's bf16 model, on a GPU), and ``--deepspeed`` replaces it.
"""

from __future__ import annotations

import collections
import math
import os
import pickle

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR
from transformers.modeling_outputs import CausalLMOutputWithPast
from xtuner.dataset import InternVL_V1_5_Dataset
import xtuner.engine
from xtuner.dataset.internvl_dataset import total_image_token
from xtuner.engine import DeepSpeedStrategy
from xtuner.model import InternVL_V1_5

from course_utils.internvl.conversation import INTERNVL_SYSTEM_MESSAGE
from course_utils.internvl.preprocessing import count_tiles
from course_utils.training.launcher import float32_precision, one_process_group



# --------------------------------------------------------------------------------------- single process
_distributed_get_rank = dist.get_rank


def get_rank_or_zero(group=None) -> int:
    """``torch.distributed.get_rank``, or 0 in a run without a process group (one process is rank 0)."""
    if dist.is_available() and dist.is_initialized():
        return _distributed_get_rank(group)
    return 0


def guard_get_rank() -> None:
    dist.get_rank = get_rank_or_zero


# --------------------------------------------------------------------------------------- resuming
def history_buffer_statistic(owner, name: str):
    """``getattr`` as an mmengine checkpoint uses it, and no further: a statistics method of ``HistoryBuffer``.

    mmengine pickles each buffer's ``{'min': HistoryBuffer.min, ...}``, i.e. ``getattr(HistoryBuffer, 'min')``;
    allowing the real ``getattr`` would let a checkpoint reach any attribute of any allowed class.
    """
    from mmengine.logging import HistoryBuffer

    if owner is HistoryBuffer and name in {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"checkpoint asks for getattr({owner!r}, {name!r}): not an mmengine statistic")


def mmengine_checkpoint_globals() -> list:
    """What mmengine pickles into a checkpoint besides tensors (message hub buffers, numpy scalars/arrays, and in a
    DeepSpeed checkpoint the DeepSpeed config as mmengine's ``ConfigDict``)."""
    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer

    numpy_core = np._core if hasattr(np, "_core") else np.core
    return [
        HistoryBuffer,
        ConfigDict,
        collections.OrderedDict,
        np.ndarray,
        np.dtype,
        numpy_core.multiarray._reconstruct,
        numpy_core.multiarray.scalar,
        *{type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")},
        (history_buffer_statistic, "__builtin__.getattr"),  # the name a protocol-2 pickle gives getattr
        (history_buffer_statistic, "builtins.getattr"),
    ]


def allow_mmengine_checkpoints() -> None:
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


# --------------------------------------------------------------------------------------- warmup
def warmup_iters(epochs: float, epoch_length: int) -> int:
    """The warmup's end in iterations: a positive warmup lasts at least 2 (mmengine's ``LinearLR`` ramps over
    ``end - begin - 1`` steps, so a 1-iteration warmup would stay at ``start_factor`` for the whole run)."""
    return max(int(epochs * epoch_length), 2) if epochs > 0 else 0


def epochs_to_iters(epochs: float, epoch_length: int) -> float:
    return epochs if math.isinf(epochs) else int(epochs * epoch_length)


class WarmupBoundary:
    """Epoch-to-iteration conversion in which the warmup's end (``warmup_bound``: "begin" or "end") is
    :func:`warmup_iters`; mixed into mmengine's schedulers below."""

    warmup_bound = "end"

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=0, end=math.inf, by_epoch=True, epoch_length=None, **kwargs):
        assert by_epoch and epoch_length, "only an epoch-based schedule is converted to iterations"
        bounds = {"begin": epochs_to_iters(begin, epoch_length), "end": epochs_to_iters(end, epoch_length)}
        bounds[cls.warmup_bound] = warmup_iters(begin if cls.warmup_bound == "begin" else end, epoch_length)
        return cls(*args, **bounds, by_epoch=False, **kwargs)


class WarmupLinearLR(WarmupBoundary, LinearLR):
    """mmengine's ``LinearLR`` whose epoch-based ``end`` never rounds down to a warmup too short to ramp."""

    warmup_bound = "end"


class CosineAfterWarmupLR(WarmupBoundary, CosineAnnealingLR):
    """mmengine's ``CosineAnnealingLR`` that starts where :class:`WarmupLinearLR` ends."""

    warmup_bound = "begin"


# --------------------------------------------------------------------------------------- model and data
class CourseInternVL(InternVL_V1_5):
    """XTuner's InternVL model; float32 on a CPU, optional gradient checkpointing and a loss from the labelled
    positions only (see the module docstring)."""

    def __init__(self, *args, float32_on_cpu: bool = True, gradient_checkpointing: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if float32_on_cpu and not torch.cuda.is_available():
            self.model.float()  # in place: the parameters the optimizer will hold stay the same objects
        if not gradient_checkpointing:
            self.gradient_checkpointing_disable()

    def _llm_forward(self, pixel_values, input_ids=None, attention_mask=None, position_ids=None, image_flags=None,
                     labels=None, **unused):
        """XTuner's training forward (ViT, ``mlp1``, image features into the prompt, LLM), with the output head
        applied only where a label is: the same loss as XTuner's, which computes float32 logits over the whole
        vocabulary (92,553) at every position, image positions included, and keeps their softmax for the backward
        pass. Works with the course's model code and OpenGVLab's (both have ``model`` and an output head)."""
        language_model = self.model.language_model
        embeds = language_model.get_input_embeddings()(input_ids).clone()  # (batch, seq, hidden)
        vit_embeds = self.model.extract_feature(pixel_values)[image_flags.squeeze(-1) == 1]  # (tiles, tokens, hidden)
        image_positions = input_ids == self.model.img_context_token_id
        image_features = vit_embeds.reshape(-1, embeds.shape[-1])[: int(image_positions.sum())]  # as XTuner truncates
        # "* 0.0 +" keeps the embedding table in the graph, as XTuner does (gradient checkpointing needs an input
        # that requires grad)
        embeds[image_positions] = embeds[image_positions] * 0.0 + image_features.to(embeds.dtype)
        llm = language_model.get_base_model() if hasattr(language_model, "get_base_model") else language_model
        hidden = llm.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).last_hidden_state  # (batch, seq, hidden)
        targets = labels[:, 1:].to(hidden.device)  # position t predicts token t + 1
        scored = targets != -100
        logits = llm.get_output_embeddings()(hidden[:, :-1][scored]).float()  # (labelled positions, vocab)
        return CausalLMOutputWithPast(loss=F.cross_entropy(logits, targets[scored]))


class CourseInternVLDataset(InternVL_V1_5_Dataset):
    """XTuner's InternVL dataset with the tiling (``max_dynamic_patch``, ``use_thumbnail``) and system message set here.

    ``None`` keeps the model config's tiling; ``system_message=None`` keeps XTuner's (InternLM2's).
    """

    def __init__(self, *args, max_dynamic_patch: int | None = None, use_thumbnail: bool | None = None,
                 system_message: str | None = INTERNVL_SYSTEM_MESSAGE, **kwargs):
        super().__init__(*args, **kwargs)
        estimated = [self._image_tokens(item, xtuner_tile_estimate) for item in self.data]
        if max_dynamic_patch is not None:
            self.max_dynamic_patch = max_dynamic_patch
        if use_thumbnail is not None:
            self.use_thumbnail = use_thumbnail
        if system_message is not None:
            self._system = system_message
        # the length-grouped sampler reads these lengths: XTuner's image estimate replaced by the tiles each picture
        # becomes under this tiling
        self.group_length = [length - old + self._image_tokens(item, count_tiles) if length > 0 else length
                             for length, old, item in zip(self.group_length, estimated, self.data)]

    def _image_tokens(self, item: dict, count) -> int:
        """Image tokens of one sample (0 for text only), its tiles counted by ``count(width, height, min, max,
        image size, thumbnail)``."""
        if item.get("image") is None:
            return 0
        if item.get("image_wh"):
            wh = item["image_wh"][0] if isinstance(item["image_wh"][0], list) else item["image_wh"]
            tiles = count(*wh, self.min_dynamic_patch, self.max_dynamic_patch, self.image_size, self.use_thumbnail)
        else:
            tiles = self.max_dynamic_patch + self.use_thumbnail
        return self.patch_token * tiles


def xtuner_tile_estimate(width, height, *tiling) -> int:
    """XTuner's count of a picture's tiles, which adds a thumbnail to a single tile too (the loader adds none)."""
    return total_image_token((width, height), *tiling)


# --------------------------------------------------------------------------------------- validation
class ValidationLoss(Hook):
    """The loss on held-out samples (lesson 03's ``test.json``) before training and at the end of every epoch,
    logged as ``val_loss`` beside the training loss in ``vis_data/scalars.json``: where it stops falling while the
    training loss goes on falling, the model is learning its training samples rather than the task.

    The same dataset class, prompt and loss as training (answer tokens only), the model in eval mode (no dropout),
    no gradients; the mean is over every answer token of the held-out samples, each process scoring its share. The
    held-out batches are made once (a quarter of the dishes: small) and kept for every evaluation.
    """

    def __init__(self, dataset: dict, batch_size: int = 8):
        self.dataset, self.batch_size = dataset, batch_size
        self.batches = None

    def before_train(self, runner) -> None:
        paths = self.dataset["data_paths"]
        missing = [path for path in ([paths] if isinstance(paths, str) else paths) if not os.path.isfile(path)]
        if missing:
            runner.logger.warning(f"no held-out samples at {missing[0]}: no validation loss in this run")
            return
        self.batches = list(runner.build_dataloader(dict(
            batch_size=self.batch_size, num_workers=0, dataset=self.dataset,
            sampler=dict(type="DefaultSampler", shuffle=False, round_up=False),  # each sample once, over the ranks
            collate_fn=dict(type="xtuner.dataset.collate_fns.default_collate_fn"))))
        if runner.iter == 0:  # a resumed run has logged it already
            self.log(runner, step=0)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1  # the step that just trained, as the logger counts
        if self.batches is not None and step % len(runner.train_dataloader) == 0:
            self.log(runner, step)

    def log(self, runner, step: int) -> None:
        loss = self.loss(runner.model)
        runner.visualizer.add_scalars({"val_loss": loss}, step=step)
        runner.logger.info(f"validation loss {loss:.4f} after step {step}")

    @torch.no_grad()
    def loss(self, model) -> float:
        from mmengine.dist import all_reduce

        while not isinstance(model, InternVL_V1_5):  # the model inside DeepSpeed's or DDP's wrapper
            model = getattr(model, "module", None) or model.model
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=next(model.parameters()).device)  # loss sum, tokens
        for batch in self.batches:
            tokens = int((batch["data"]["labels"][:, 1:] != -100).sum())  # position t predicts token t + 1
            total += torch.tensor([model.val_step(batch)["loss"].item() * tokens, tokens], device=total.device)
        model.train()
        all_reduce(total)
        return float(total[0] / total[1])


# --------------------------------------------------------------------------------------- logging
def scalar_visualizer(**kwargs):
    """mmengine's Visualizer writing ``vis_data/scalars.json`` (LocalVisBackend), and TensorBoard event files
    when tensorboard is installed (a config cannot test that itself: any import makes it a lazy config)."""
    from importlib.util import find_spec

    from mmengine.visualization import Visualizer

    backends = [dict(type="LocalVisBackend")]
    if find_spec("tensorboard") is not None:
        backends.append(dict(type="TensorboardVisBackend"))
    return Visualizer.get_instance(vis_backends=backends, **kwargs)


# --------------------------------------------------------------------------------------- `--deepspeed` by hand
def cpu_bf16_supported() -> bool:
    """XTuner's ``"auto"`` precision asks ``torch.cpu.is_bf16_supported()``, which torch lacks: no (the course's
    recipe trains in float32 on a CPU)."""
    return False


class CourseDeepSpeedStrategy(DeepSpeedStrategy):
    """XTuner's DeepSpeed strategy (``xtuner train --deepspeed ...``) on a machine without CUDA, and in one process
    started without torchrun: float32 on a CPU, and the process group a one-process torchrun would set up."""

    def __init__(self, *args, config: dict | None = None, **kwargs):
        if config is not None and not torch.cuda.is_available():
            config = float32_precision(dict(config))
        if "RANK" not in os.environ:  # not started by torchrun (nor by the course's launcher)
            os.environ.update(one_process_group(os.environ))
        super().__init__(*args, config=config, **kwargs)


def guard_deepspeed_by_hand() -> None:
    if not hasattr(torch.cpu, "is_bf16_supported"):
        torch.cpu.is_bf16_supported = cpu_bf16_supported
    xtuner.engine.DeepSpeedStrategy = CourseDeepSpeedStrategy  # the class `xtuner train --deepspeed` builds


# --------------------------------------------------------------------------------------- several processes
_cuda_set_device = torch.cuda.set_device


def set_device_if_cuda(device) -> None:
    """``torch.cuda.set_device``, skipped on a machine without CUDA (where gloo connects the processes)."""
    if torch.cuda.is_available():
        _cuda_set_device(device)


def guard_set_device() -> None:
    torch.cuda.set_device = set_device_if_cuda


EPOCH_LENGTH_INFO = "course_epoch_length"  # kept in mmengine's message hub, which every checkpoint saves


class ResumeAtSamePlace(Hook):
    """A run resumed with another number of steps per epoch than it was saved with (another number of GPUs: each step
    takes batch x GPUs samples) goes on at the same place in its data, on the schedule of its new length.

    mmengine restores the saved step and the schedulers' saved state as they are. Measured on a CPU: a run of 162
    steps an epoch on 2 processes, resumed at step 10 on 1 process (324 steps an epoch), went on at step 11 with the
    2-process schedule, whose cosine ends at step 162: its last 162 steps would have trained at learning rate 0.
    This hook records the epoch length in each checkpoint; on a resume with another one it moves the run to the
    same fraction of its epochs (step 10 of 162 -> step 20 of 324) and puts the learning rate where an uninterrupted
    run of the new length has it at that step (:func:`place_schedulers`).
    """

    priority = "VERY_HIGH"

    def before_run(self, runner) -> None:  # after the checkpoint is loaded, before the loop skips the data trained
        epoch_length = len(runner.train_dataloader)
        saved_epoch_length = runner.message_hub.get_info(EPOCH_LENGTH_INFO)
        if runner.iter and saved_epoch_length and saved_epoch_length != epoch_length:
            step = min(round(runner.iter * epoch_length / saved_epoch_length), runner.max_iters)
            runner.logger.info(f"resumed with {epoch_length} steps an epoch instead of {saved_epoch_length} (another "
                               f"number of processes or batch size): step {runner.iter} becomes step {step}")
            runner.train_loop._iter = step
            place_schedulers(runner.param_schedulers, runner.cfg, epoch_length, step)
        runner.message_hub.update_info(EPOCH_LENGTH_INFO, epoch_length)


def place_schedulers(schedulers, cfg, epoch_length: int, step: int) -> None:
    """Set the run's ``schedulers`` (and their optimizer's learning rates) to where they are after ``step`` steps of
    an uninterrupted run with ``epoch_length`` steps an epoch: the config's schedulers are built again for that length
    on a one-parameter optimizer, stepped ``step`` times, and their state copied."""
    from .config import build_schedulers, one_parameter_optimizer

    live = [s for group in schedulers.values() for s in group] if isinstance(schedulers, dict) else list(schedulers)
    optimizer = one_parameter_optimizer(cfg.optim_wrapper)
    fresh = build_schedulers(cfg.param_scheduler, optimizer, epoch_length)
    if [type(s) for s in fresh] != [type(s) for s in live]:
        raise RuntimeError("the resumed run's schedulers are not the config's: cannot move them to the resumed step")
    for _ in range(step):
        for scheduler in fresh:
            scheduler.step()
    ratio = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"]
    for old, new in zip(live, fresh):
        # begin/end, the step counters and each class's own length (T_max, total_iters); each group keeps its own
        # base learning rate
        old.__dict__.update({k: v for k, v in new.state_dict().items() if k not in ("base_values", "_last_value")})
    for group in live[0].optimizer.param_groups:
        group["lr"] = group["initial_lr"] * ratio
    for scheduler in live:
        scheduler._last_value = [group["lr"] for group in scheduler.optimizer.param_groups]


guard_get_rank()
guard_set_device()
guard_deepspeed_by_hand()
allow_mmengine_checkpoints()
