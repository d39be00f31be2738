"""LoRA fine-tuning of the InternVL2-2B-shaped preset through `xtuner train` on a GPU: memory, speed and MFU.

The original lesson's shape: LLM LoRA r=128, batch 4 x accumulation 2, 800x600 photos -> 12 tiles + thumbnail =
3,328 image tokens per sample, the course's config `configs/internvl2_2b_lora_foodieqa.py`, random weights from the
course's own model code (`course_utils.tiny_model`, preset "internvl2-2b"). Each variant is one real `xtuner train`
run through lesson 04's launcher:

* `plain`: no DeepSpeed, mmengine's OptimWrapper (XTuner's bf16 model; the stock fp16 AMP wrapper fails here);
* `zero2`: `--deepspeed deepspeed_zero2`, as the original lesson trained.

Figures per variant: peak GPU memory (mmengine's `memory`, torch.cuda.max_memory_allocated), seconds per iteration
(mmengine's `time`, median over the iterations after the warm-up ones), samples/s, tokens/s, and MFU: model FLOPs
per second over the bf16 matmul peak measured on the same GPU at the start. Model FLOPs per sample count the frozen
ViT's forward (2 x params x tokens: no gradient flows into it), the LLM's forward and its backward to the activations
(4 x params x tokens: frozen weights need no weight gradient), LoRA's weight gradients and the attention score/value
products; gradient checkpointing's recomputation is not counted as useful work.

    python benchmarks/lora_training.py --out benchmarks/results/lora_training.json

On a machine with several GPUs, the same variants train on 1 and 2 GPUs (same iterations, one batch of 4 per GPU):

    python benchmarks/lora_training.py --variants zero2 --gpus 1,2 --out multi_gpu.json

Resuming on another number of GPUs (``--universal-resume SAVED,RESUMED``, e.g. ``2,1``): ZeRO-2 trains on SAVED GPUs
and is stopped once step 8 is saved; lesson 04's launcher resumes it on RESUMED GPUs through DeepSpeed's universal
checkpoint. Recorded: the conversion's time, how far its float32 weights are from the ones ZeRO's shares hold
(``zero_to_fp32``), the step the resume starts at, its learning rates against the plan, loss and speed. With one GPU,
``1,1`` converts and loads the universal checkpoint on that GPU (bf16 ZeRO-2 state) the way ``2,1`` does:

    python benchmarks/lora_training.py --universal-resume 2,1 --out universal_resume.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REFERENCE = {"peak_memory_gb": 28.5, "samples_per_s": 0.77, "mfu": 0.06,
             "setup": "H100, official remote code, eager attention, plain OptimWrapper, no DeepSpeed"}
GOALS = {"peak_memory_gb_at_most": 20.0, "samples_per_s_at_least": 2 * REFERENCE["samples_per_s"]}
PHOTO_SIZE = (800, 600)  # -> 4x3 grid of 448-px tiles + thumbnail = 13 tiles
WARMUP_ITERS = 3


def measured_bf16_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def write_photos_dataset(folder: Path, samples: int) -> Path:
    """``samples`` FoodieQA-style questions about 800x600 synthetic dish photos, in XTuner's InternVL format."""
    import random

    from course_utils.foodieqa.synthetic import draw_dish_image, draw_dishes

    rng = random.Random(0)
    dishes = draw_dishes(36, rng)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(samples):
        dish = dishes[index % len(dishes)]
        name = f"images/{index:04d}.jpg"
        draw_dish_image(dish, rng).resize(PHOTO_SIZE).save(folder / name, quality=90)
        items.append({"id": str(index), "image": name, "image_wh": list(PHOTO_SIZE), "conversations": [
            {"from": "human", "value": "<image>\n图片中的食物通常属于哪个菜系？"},
            {"from": "gpt", "value": f"{dish.cuisine.name}，图中的菜是{dish.name}"}]})
    train_json = folder / "train.json"
    train_json.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return train_json


def model_flops_per_sample(model_dir: Path, lora_rank: int, tiles: int, text_tokens: int) -> float:
    from course_utils.internvl import InternVLChatConfig
    from course_utils.tiny_model import build_model
    from course_utils.training.lora import lora_parameter_count, lora_targets

    config = InternVLChatConfig.from_pretrained(model_dir)
    layout = build_model(config, device="meta")
    vit_params = sum(p.numel() for p in layout.vision_model.parameters())
    llm_params = sum(p.numel() for p in layout.language_model.parameters())
    mlp1_params = sum(p.numel() for p in layout.mlp1.parameters())
    lora_params = lora_parameter_count(layout.language_model, lora_rank, lora_targets(layout.language_model))
    vit, llm = config.vision_config, config.llm_config
    vit_tokens = tiles * ((vit.image_size // vit.patch_size) ** 2 + 1)
    llm_tokens = tiles * config.num_image_token + text_tokens
    tile_tokens = vit_tokens // tiles
    vit_attention = 4 * vit.num_hidden_layers * tile_tokens**2 * vit.hidden_size * tiles  # each tile attends alone
    llm_attention = 4 * llm.num_hidden_layers * llm_tokens**2 * llm.hidden_size / 2  # causal: half the scores
    return (2 * vit_params * vit_tokens + vit_attention  # frozen ViT: forward only
            + 6 * mlp1_params * tiles * config.num_image_token  # trained projector
            + 4 * llm_params * llm_tokens + 3 * llm_attention  # frozen LLM: forward + activation gradients
            + 6 * lora_params * llm_tokens)  # LoRA adapters: forward, activation and weight gradients


def run_variant(name: str, deepspeed: str | None, model_dir: Path, train_json: Path, work_root: Path,
                gpus: int = 1) -> dict:
    from course_utils.training import LESSON_CONFIG, TrainingJob, config_path, train, training_curve

    job = TrainingJob(config=config_path(LESSON_CONFIG), model_path=str(model_dir), train_json=train_json,
                      image_folder=train_json.parent, work_dir=work_root / f"{name}-{gpus}gpu", max_epochs=1,
                      save_steps=10_000, log_interval=1, deepspeed=deepspeed, nproc_per_node=gpus)
    try:
        result = train(job, fresh=True, progress=False)
    except Exception as error:  # a variant that cannot train is reported, not fatal for the others
        return {"variant": name, "gpus": gpus, "error": str(error)[-3000:]}
    curve = training_curve(job.work_dir)
    seconds = statistics.median(row["time"] for row in curve[WARMUP_ITERS:])
    return {"variant": name, "deepspeed": deepspeed, "gpus": gpus, "iterations": len(curve),
            "seconds_per_iteration": round(seconds, 4),
            "peak_memory_gb": round(max(row.get("memory", 0) for row in curve) / 1024, 2),
            "first_loss": curve[0]["loss"], "final_loss": curve[-1]["loss"], "wall_seconds": result.seconds}


def universal_resume(model_dir: Path, train_json: Path, work_root: Path, saved_gpus: int, resumed_gpus: int,
                     stop_step: int = 8) -> dict:
    """A ZeRO-2 run on ``saved_gpus`` stopped at ``stop_step`` and resumed on ``resumed_gpus`` (see the docstring)."""
    import dataclasses
    import subprocess

    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from course_utils.training import (LESSON_CONFIG, TrainingJob, config_path, scheduled_lrs, train,
                                       training_curve)
    from course_utils.training.launcher import deepspeed_config, universal_checkpoint

    saved_job = TrainingJob(config=config_path(LESSON_CONFIG), model_path=str(model_dir), train_json=train_json,
                            image_folder=train_json.parent, work_dir=work_root / "universal-resume", max_epochs=1,
                            save_steps=stop_step, log_interval=1, deepspeed="deepspeed_zero2",
                            nproc_per_node=saved_gpus)
    stopped = train(saved_job, fresh=True, stop_after_step=stop_step, progress=False)
    checkpoint = saved_job.work_dir / f"iter_{stop_step}.pth"
    started = time.perf_counter()
    universal = universal_checkpoint(checkpoint, saved_gpus, resumed_gpus)
    conversion_s = time.perf_counter() - started
    gathered = get_fp32_state_dict_from_zero_checkpoint(str(saved_job.work_dir), tag=checkpoint.name)
    difference = max((torch.load(universal / "zero" / name / "fp32.pt", weights_only=False)["param"].reshape(w.shape)
                      - w).abs().max().item() for name, w in gathered.items())
    resumed_job = dataclasses.replace(saved_job, nproc_per_node=resumed_gpus)
    started = time.perf_counter()
    if resumed_gpus != saved_gpus:  # what lesson 04 does: the launcher converts by itself
        resumed = train(resumed_job, resume=True, progress=False)
        first_resumed = resumed.first_resumed_step
    else:  # one GPU: the same launch, given the conversion
        with open(saved_job.work_dir / "xtuner-train.log", "a") as log:
            subprocess.run(resumed_job.command(universal, deepspeed_config(resumed_job, load_universal=True)),
                           env=resumed_job.environment(), cwd=saved_job.work_dir, stdout=log,
                           stderr=subprocess.STDOUT, check=True)
        first_resumed = stop_step + 1
    resumed_s = time.perf_counter() - started
    curve = {row["step"]: row for row in training_curve(saved_job.work_dir)}
    planned = scheduled_lrs(resumed_job)
    after = [step for step in sorted(curve) if step >= first_resumed]
    return {"saved_on_gpus": saved_gpus, "resumed_on_gpus": resumed_gpus, "stopped_at_step": stop_step,
            "steps_before_stop": stopped.steps, "universal_conversion_seconds": round(conversion_s, 1),
            "universal_vs_zero_shares_max_abs_weight_diff": difference, "parameters_compared": len(gathered),
            "first_resumed_step": first_resumed, "last_step": after[-1],
            "loss_at_stop": curve[stop_step]["loss"], "loss_after_resume": curve[after[0]]["loss"],
            "final_loss": curve[after[-1]]["loss"], "first_loss": curve[1]["loss"],
            "resumed_lr_max_rel_diff_from_plan": max(abs(curve[s]["lr"] - planned[s - 1]) / planned[s - 1]
                                                     for s in after if planned[s - 1] > 0),
            "resumed_seconds_per_iteration": statistics.median(curve[s]["time"] for s in after[WARMUP_ITERS:]),
            "resumed_peak_memory_gb": round(max(curve[s].get("memory", 0) for s in after) / 1024, 2),
            "resumed_launch_seconds": round(resumed_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora_training.json"))
    parser.add_argument("--iterations", type=int, default=16, help="iterations (batches of 4) per variant")
    parser.add_argument("--variants", default="plain,zero2")
    parser.add_argument("--gpus", default="1", help="GPU counts to train each variant on, e.g. 1,2 (torchrun for "
                                                   "more than one, as NPROC_PER_NODE does)")
    parser.add_argument("--universal-resume", metavar="SAVED,RESUMED",
                        help="instead of the variants: ZeRO-2 on SAVED GPUs, resumed on RESUMED (see the docstring)")
    args = parser.parse_args()
    gpu_counts = [int(n) for n in args.gpus.split(",")]
    if args.universal_resume:
        gpu_counts = [int(n) for n in args.universal_resume.split(",")]

    import torch

    if not torch.cuda.is_available():
        sys.exit("error: this benchmark needs a CUDA GPU")
    if max(gpu_counts) > torch.cuda.device_count():
        sys.exit(f"error: --gpus asks for {max(gpu_counts)} GPUs and torch sees {torch.cuda.device_count()}")
    from xtuner.registry import BUILDER

    from course_utils.tiny_model import build_model_dir
    from course_utils.training import LESSON_CONFIG, TrainingJob, config_path, load_config

    peak_tflops = measured_bf16_peak_tflops()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = build_model_dir(scratch / "internvl2-2b-random", preset="internvl2-2b")
        batch_size = 4
        # every GPU count runs the same number of iterations: each GPU takes its own batch of 4
        datasets = {gpus: write_photos_dataset(scratch / f"photos-{gpus}gpu",
                                               samples=batch_size * args.iterations * gpus) for gpus in gpu_counts}
        train_json = datasets[gpu_counts[0]]
        probe = TrainingJob(config=config_path(LESSON_CONFIG), model_path=str(model_dir), train_json=train_json,
                            image_folder=train_json.parent, work_dir=scratch / "probe")
        config = load_config(probe)
        dataset = BUILDER.build(config.train_dataloader.dataset)
        sample = dataset.prepare_data(0)
        tiles, tokens = sample["pixel_values"].shape[0], len(sample["input_ids"])
        text_tokens = tokens - tiles * dataset.patch_token
        flops = model_flops_per_sample(model_dir, config.model.llm_lora.r, tiles, text_tokens)
        if args.universal_resume:
            row = universal_resume(model_dir, datasets[gpu_counts[0]], scratch / "runs", *gpu_counts)
            print(json.dumps(row))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                            "universal_resume": row}, indent=1) + "\n", encoding="utf-8")
            return
        results = []
        for name, gpus in [(name, gpus) for name in args.variants.split(",") for gpus in gpu_counts]:
            row = run_variant(name, "deepspeed_zero2" if name == "zero2" else None, model_dir, datasets[gpus],
                              scratch / "runs", gpus)
            if "error" not in row:
                samples_per_s = batch_size * gpus / row["seconds_per_iteration"]
                row.update(samples_per_s=round(samples_per_s, 3), tokens_per_s=round(samples_per_s * tokens, 1),
                           mfu=round(samples_per_s * flops / (peak_tflops * 1e12 * gpus), 4),
                           meets_memory_goal=row["peak_memory_gb"] <= GOALS["peak_memory_gb_at_most"],
                           meets_speed_goal=samples_per_s >= GOALS["samples_per_s_at_least"])
            results.append(row)
            print(json.dumps(row))
    report = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "measured_bf16_peak_tflops": round(peak_tflops, 1),
        "shape": {"tiles_per_sample": tiles, "tokens_per_sample": tokens, "batch_size": batch_size,
                  "accumulative_counts": config.optim_wrapper.accumulative_counts, "lora_r": config.model.llm_lora.r,
                  "model_flops_per_sample": flops},
        "reference": REFERENCE, "goals": GOALS, "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
