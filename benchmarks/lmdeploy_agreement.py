"""Does LMDeploy's PyTorch engine, a second and independent InternVL2 implementation, agree with the course's?

For each preset (the tiny embedded model, and the InternVL2-2B shapes with random weights) this builds the model
folder, serves it with LMDeploy's PyTorch engine, asks one image question greedily, then feeds the course's
model the very prompt LMDeploy built (same token ids, same preprocessed tiles) and compares:

* the tiles: LMDeploy's preprocessing vs ``course_utils.internvl.load_image`` (max |difference|);
* the greedy tokens, position by position;
* the log-probabilities of LMDeploy's top-k tokens at every generated position, where both saw the same
  prefix;
* the first token's top-k log-probs against the course model run in float32: random weights give near-flat
  distributions where bf16 rounding can flip a near-tie, so "agree to bf16 tolerance" is measured as LMDeploy's
  distance from the float32 reference next to the course's own bf16 distance from it.

Needs a CUDA GPU, LMDeploy 0.10.x and transformers 4.48. Run from the project root:

    python benchmarks/lmdeploy_agreement.py --out benchmarks/results/lmdeploy_agreement.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

QUESTION = "图片中的食物通常属于哪个菜系？请描述这道菜。"
NEW_TOKENS = 24
TOP_K = 5


def test_photo(width=800, height=600):
    """A deterministic 800x600 'photo' (12 tiles + thumbnail at 448 px): gradient, plate, food pieces."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(90 + y % 120, 60 + y // 6 % 100, 40))
    draw.ellipse((150, 100, 650, 520), fill=(235, 235, 225), outline=(30, 80, 160), width=18)
    for i in range(9):
        x, y = 260 + 45 * (i % 3) * 2, 200 + 60 * (i // 3)
        draw.rectangle((x, y, x + 50, y + 30), fill=(170, 60 + 10 * i, 30))
    return image


def lmdeploy_answer(model_dir: Path, image: Image.Image, max_dynamic_patch: int):
    """LMDeploy's greedy answer, top-k log-probs, and the exact prompt input (token ids, tiles) it used."""
    from lmdeploy import GenerationConfig, PytorchEngineConfig, pipeline
    from lmdeploy.vl.utils import encode_image_base64

    messages = [dict(role="user", content=[
        dict(type="text", text=QUESTION),
        dict(type="image_url", image_url=dict(url=f"data:image/png;base64,{encode_image_base64(image)}",
                                              max_dynamic_patch=max_dynamic_patch)),
    ])]
    engine = PytorchEngineConfig(session_len=8192, cache_max_entry_count=0.2, logprobs_mode="raw_logprobs")
    pipe = pipeline(str(model_dir), backend_config=engine, log_level="ERROR")
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, top_k=1, logprobs=TOP_K, ignore_eos=True)
    pipe(messages, gen_config=gen)  # warm-up: first call compiles kernels
    start = time.perf_counter()
    response = pipe(messages, gen_config=gen)
    seconds = time.perf_counter() - start
    prompt_input = asyncio.run(pipe._get_prompt_input(messages, True, True, None))
    pipe.close()
    return response, prompt_input, seconds


def course_answer(model_dir: Path, input_ids, pixel_values):
    """The course model's greedy tokens and per-position log-probs for the same prompt and tiles."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True, torch_dtype=torch.bfloat16).cuda().eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    ids = torch.tensor([input_ids], device="cuda")
    pixel_values = pixel_values.to("cuda", torch.bfloat16)
    model.generate(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2,
                   do_sample=False)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    # LMDeploy samples only among the tokenizer's ids (the 2B preset's 92,553-row head is larger than the
    # course tokenizer); the same restriction here keeps the greedy comparison like for like
    beyond_tokenizer = list(range(len(tokenizer), model.config.llm_config.vocab_size))
    out = model.generate(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                         suppress_tokens=beyond_tokenizer or None,
                         output_scores=True, return_dict_in_generate=True, eos_token_id=None, pad_token_id=2)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    logprobs = [torch.log_softmax(s[0].float(), -1).cpu() for s in out.scores]
    return out.sequences[0].tolist(), logprobs, seconds, model, tokenizer


def teacher_forced_logprobs(model, input_ids, pixel_values, continuation):
    """Our log-probs at every position of LMDeploy's continuation (same prefix for both, whatever we'd pick)."""
    ids = torch.tensor([input_ids + continuation], device="cuda")
    with torch.no_grad():
        logits = model(pixel_values.to("cuda", torch.bfloat16), input_ids=ids).logits[0].float()
    start = len(input_ids) - 1
    return torch.log_softmax(logits[start:start + len(continuation)], -1).cpu()


def first_token_logprobs(model, input_ids, pixel_values, dtype):
    """The course model's log-probs for the first answer token, computed in ``dtype``."""
    model.to(dtype)
    ids = torch.tensor([input_ids], device="cuda")
    with torch.no_grad():
        logits = model(pixel_values.to("cuda", dtype), input_ids=ids).logits[0, -1].float()
    return torch.log_softmax(logits, -1).cpu()


def first_token_agreement(lmdeploy_top: dict, lmdeploy_token: int, course_bf16, course_fp32, sampling_vocab: int) -> dict:
    """LMDeploy's and the course's bf16 distance from the course's float32 log-probs, on LMDeploy's top-k tokens,
    and whether each one's first greedy token (among the tokenizer's ids) is the float32 reference's."""
    tokens = list(lmdeploy_top)
    reference = course_fp32[tokens]
    lmdeploy = torch.tensor([lmdeploy_top[t] for t in tokens])
    top2 = course_fp32[:sampling_vocab].topk(2).values
    return {
        "first_topk_logprob_max_abs_difference_lmdeploy_vs_fp32": float((lmdeploy - reference).abs().max()),
        "first_topk_logprob_max_abs_difference_course_bf16_vs_fp32": float((course_bf16[tokens] - reference).abs().max()),
        "first_logprob_top1_top2_gap_fp32": float(top2[0] - top2[1]),
        "first_token_lmdeploy_equals_fp32": lmdeploy_token == int(course_fp32[:sampling_vocab].argmax()),
        "first_token_course_bf16_equals_fp32": int(course_bf16[:sampling_vocab].argmax()) == int(course_fp32[:sampling_vocab].argmax()),
    }


def compare(preset: str, workdir: Path) -> dict:
    from course_utils.internvl import load_image
    from course_utils.tiny_model import build_config, build_model_dir

    model_dir = build_model_dir(workdir / preset, preset=preset, device="cuda")
    config = build_config(preset, vocab_size=1)
    image = test_photo()
    response, prompt_input, lmdeploy_seconds = lmdeploy_answer(model_dir, image, config.max_dynamic_patch)
    input_ids = prompt_input["input_ids"]
    lmdeploy_tiles = prompt_input["multimodal"][0]["pixel_values"]
    our_tiles = load_image(image, image_size=config.image_size, max_num=config.max_dynamic_patch)
    ours, _, course_seconds, model, tokenizer = course_answer(model_dir, input_ids, lmdeploy_tiles)
    ours = ours[:NEW_TOKENS]
    theirs = list(response.token_ids)[:NEW_TOKENS]
    same_prefix = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    forced = teacher_forced_logprobs(model, input_ids, lmdeploy_tiles, theirs)
    differences = [abs(forced[pos, token].item() - value)
                   for pos, top in enumerate(response.logprobs or []) for token, value in top.items()]
    first_token = first_token_agreement(
        response.logprobs[0],
        theirs[0],
        first_token_logprobs(model, input_ids, lmdeploy_tiles, torch.bfloat16),
        first_token_logprobs(model, input_ids, lmdeploy_tiles, torch.float32),
        len(tokenizer),
    )
    return {
        "preset": preset,
        "image": "800x600 drawn photo",
        "prompt_tokens": len(input_ids),
        "image_tokens": input_ids.count(model.img_context_token_id),
        "tiles": int(lmdeploy_tiles.shape[0]),
        "tiles_max_abs_difference": float((lmdeploy_tiles.float() - our_tiles.float()).abs().max()),
        "greedy_tokens_compared": len(theirs),
        "greedy_tokens_identical_prefix": same_prefix,
        "greedy_tokens_identical": ours == theirs,
        "lmdeploy_text": response.text,
        "course_text": tokenizer.decode(ours, skip_special_tokens=True),
        "topk_logprob_max_abs_difference": max(differences) if differences else math.nan,
        "topk_logprob_mean_abs_difference": sum(differences) / len(differences) if differences else math.nan,
        "first_token_top1_agrees": int(forced[0, : len(tokenizer)].argmax()) == theirs[0],
        "sampling_vocab_size": len(tokenizer),
        **first_token,
        "lmdeploy_seconds_for_answer": round(lmdeploy_seconds, 3),
        "course_transformers_seconds_for_answer": round(course_seconds, 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,internvl2-2b")
    parser.add_argument("--out", default="benchmarks/results/lmdeploy_agreement.json")
    args = parser.parse_args()
    import lmdeploy
    import transformers

    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lmdeploy": lmdeploy.__version__,
        "dtype": "bfloat16",
        "results": [],
    }
    with tempfile.TemporaryDirectory() as workdir:
        for preset in args.presets.split(","):
            result = compare(preset, Path(workdir))
            print(json.dumps(result, ensure_ascii=False, indent=2), flush=True)
            results["results"].append(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":  # LMDeploy's engine starts processes
    main()
