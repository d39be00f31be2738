"""Memory of one LoRA training step on a CPU: XTuner's training forward against the course's.

XTuner's ``InternVL_V1_5`` asks the LLM for logits at every position and computes the loss itself; the course's
``CourseInternVL`` (``course_utils/training/xtuner_patches.py``) applies the output head only where a label is.
A FoodieQA photo is 13 tiles, 3,328 image positions, and almost none of them has a label. This measures one
forward and backward pass of each on the same sample, at InternVL2-2B's widths and 92,553-token vocabulary but one
ViT layer and one LLM layer (the saving is in the output head, whatever the depth), float32 as XTuner trains on a
CPU, LoRA r=128 as the lesson's config. Each variant runs in its own process; the figure is its peak resident
memory during the step above its memory before it.

    python benchmarks/lora_step_memory.py --out benchmarks/results/lora_step_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TILES = 13  # an 800x600 photo: 12 tiles and a thumbnail
ANSWER_TOKENS = 30  # the labelled positions: about an answer's length
VARIANTS = ("xtuner", "course")


def measure_step(variant: str, model_dir: Path) -> dict:
    """One training step of ``variant`` in this process: peak memory above what it held before the step."""
    import psutil
    import torch
    import torch.distributed as dist
    from peft import LoraConfig
    from xtuner.model import InternVL_V1_5

    from course_utils.training.xtuner_patches import CourseInternVL

    # XTuner's forward asks torch.distributed for its rank: a one-process group answers
    dist.init_process_group("gloo", init_method=f"file://{tempfile.mkdtemp()}/store", rank=0, world_size=1)
    lora = dict(type=LoraConfig, r=128, lora_alpha=256, lora_dropout=0.05, target_modules=None, task_type="CAUSAL_LM")
    model_class = CourseInternVL if variant == "course" else InternVL_V1_5
    model = model_class(str(model_dir), freeze_llm=True, freeze_visual_encoder=True, llm_lora=lora).float().train()
    torch.manual_seed(0)
    image_tokens = [model.model.img_context_token_id] * model.model.num_image_token * TILES
    ids = torch.tensor([[1, 5, *image_tokens, *range(100, 100 + ANSWER_TOKENS + 20)]])
    labels = ids.clone()
    labels[:, :-ANSWER_TOKENS] = -100
    data = dict(pixel_values=torch.randn(1, TILES, 3, 448, 448), input_ids=ids, labels=labels,
                attention_mask=torch.ones_like(ids, dtype=torch.bool), position_ids=torch.arange(ids.shape[1])[None])
    before = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    loss = model(data)["loss"]
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if peak <= peak_before:
        raise RuntimeError("loading the model took more memory than the step: the step's peak is not measurable")
    return {"variant": variant, "tokens": ids.shape[1], "labelled_positions": ANSWER_TOKENS,
            "vocab_size": model.model.language_model.config.vocab_size, "loss": round(loss.item(), 4),
            "step_peak_gb": round((peak - before) / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lora_step_memory.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one measurement, in a subprocess
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure_step(args.variant, args.model_dir)))
        return

    from course_utils.tiny_model import build_model_dir

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_model_dir(Path(scratch) / "internvl2-2b-1-layer", preset="internvl2-2b", layers=1)
        rows = []
        for variant in VARIANTS:
            run = subprocess.run([sys.executable, __file__, "--variant", variant, "--model-dir", str(model_dir)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]))
    saved = rows[0]["step_peak_gb"] - rows[1]["step_peak_gb"]
    report = {"setup": {"model": "InternVL2-2B widths and vocabulary, 1 ViT layer, 1 LLM layer, random weights",
                        "dtype": "float32", "device": "cpu", "tiles": TILES, "lora_r": 128, "batch_size": 1},
              "variants": rows, "saved_gb_per_sample": round(saved, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"the course's forward needs {saved:.2f} GB less per sample; written {args.out}")


if __name__ == "__main__":
    main()
