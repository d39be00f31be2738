"""How fast does InternVL2 answer image questions? The course's model code against LMDeploy's PyTorch engine.

Same InternVL2-2B-shaped random weights for every row, bf16, one CUDA GPU, fixed 64 output tokens per request
(end tokens ignored), 32 image + question requests in two sets: ``one_tile`` (448x448 pictures, one 448-px tile
each) and ``photo_13_tiles`` (800x600 photos as FoodieQA has them: 12 tiles + a thumbnail each).

Rows:
  (a) ``chat``        the model card's ``model.chat()``, one request at a time;
  (b) ``batch_chat``  the model card's ``model.batch_chat()``, requests in batches (a sweep of batch sizes);
  (c) ``engine``      the course's transformers engine (``course_utils.engines``), all requests in one batch;
  (d) ``lmdeploy``    LMDeploy's PyTorch engine ``pipeline``, default settings and tuned knobs;
  ``tp``              on several GPUs: LMDeploy through ``load_engine`` with tensor parallelism (``--tp 1,2``), its
                      requests/s and whether its greedy answers match those on one GPU; ``--executors uni,mp``
                      runs each GPU count with each of the PyTorch engine's executors (in this process, or in
                      worker processes as several GPUs need), which one GPU can compare.
Each row reports requests/s, output tokens/s and peak GPU memory. ``profile`` counts, with the PyTorch profiler,
what one decoding step of ``batch_chat`` costs the host: kernel launches, ``.item()``-style reads and
synchronisations (a 16-token run minus a 1-token run, divided by 15).

Run from the project root on the GPU machine; ``--remote-code DIR`` measures other InternVL2 ``.py`` files on the
same weights (e.g. an older version of the course's code):

    python benchmarks/generation_throughput.py run --rows profile,a,b --out part-course.json
    python benchmarks/generation_throughput.py run --rows d --out part-lmdeploy.json
    python benchmarks/generation_throughput.py combine part-*.json --out benchmarks/results/generation_throughput.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

NEW_TOKENS = 64
REQUESTS = 32
QUESTIONS = [
    "图片中的食物通常属于哪个菜系？",
    "图片中的食物的主要食材是什么？",
    "这道菜来自哪个地区？",
    "Which cuisine does the food in the image belong to?",
    "What is the main ingredient of the dish?",
    "Describe the dish on the plate.",
    "这道菜是什么颜色？请描述这道菜。",
    "What region of China is this dish from? Answer briefly.",
]
REQUEST_SETS = {"one_tile": (448, 448), "photo_13_tiles": (800, 600)}
SWEEP = (1, 2, 4, 8, 16, 32)
DEVICE = "cuda"  # ``run --device cpu --preset tiny`` checks the script itself on a machine without a GPU
# The official OpenGVLab remote code on the same machine kind, recorded before this script existed (one run,
# 32 one-tile requests, 64 tokens): it cannot be downloaded here, so its figures are quoted, not re-measured.
OFFICIAL_RECORDED = {"chat": 0.59, "batch_chat": 17.3}


def dish_image(index: int, size: tuple[int, int]) -> Image.Image:
    """A deterministic picture of a plate of food, different per ``index``."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(90 + (y + 7 * index) % 120, 60 + y // 6 % 100, 40 + 5 * index % 80))
    draw.ellipse((width * 0.18, height * 0.16, width * 0.82, height * 0.86), fill=(235, 235, 225),
                 outline=(30, 80 + 4 * index, 160), width=max(4, width // 45))
    for i in range(3 + index % 7):
        x, y = width * (0.33 + 0.1 * (i % 3)), height * (0.33 + 0.1 * (i // 3))
        draw.rectangle((x, y, x + width / 16, y + height / 20), fill=(170, 60 + 10 * i, 30 + 20 * index % 200))
    return image


def requests_of(set_name: str):
    size, count = REQUEST_SETS[set_name], REQUESTS
    return [dish_image(i, size) for i in range(count)], [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]


def on_gpu() -> bool:
    return DEVICE.startswith("cuda")


def model_folder(work_dir: Path, remote_code: Path | None, preset: str = "internvl2-2b") -> Path:
    """The InternVL2-2B-shaped folder (built once, random weights, seed 0); with ``remote_code``, a sibling
    folder whose ``.py`` files come from there and whose weights and tokenizer are links to the same files."""
    from course_utils.internvl import REMOTE_CODE_FILES
    from course_utils.tiny_model import build_model_dir

    base = work_dir / f"{preset}-random"
    if not (base / "model.safetensors").exists():
        build_model_dir(base, preset=preset, device=DEVICE)
    if remote_code is None:
        return base
    variant = work_dir / f"{preset}-random-{remote_code.resolve().name}"
    variant.mkdir(exist_ok=True)
    for path in base.iterdir():
        target = variant / path.name
        if not target.exists():
            if path.name in REMOTE_CODE_FILES:
                target.write_bytes((remote_code / path.name).read_bytes())
            else:
                target.symlink_to(path)
    return variant


def load_course_model(folder: Path, attention: str):
    """The model card's loading call; ``attention="eager"`` is its ``use_flash_attn=False``."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, torch_dtype=torch.bfloat16 if on_gpu() else torch.float32,
                                      low_cpu_mem_usage=True, use_flash_attn=attention != "eager",
                                      trust_remote_code=True).to(DEVICE).eval()
    return model, AutoTokenizer.from_pretrained(folder, trust_remote_code=True)


def tiles_of(model, images):
    from course_utils.chat import image_pixel_values

    return [image_pixel_values(model, image) for image in images]


def timed(fn):
    if on_gpu():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if on_gpu():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def reset_memory_peak():
    if on_gpu():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory_peak():
    return torch.cuda.max_memory_allocated() if on_gpu() else 0


def settings(new_tokens=NEW_TOKENS):
    # no end token: every request writes exactly ``new_tokens`` tokens, whatever the random weights say
    return dict(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)


def check_fixed_length(model, tokenizer, tiles, question):
    """Ask once through ``generate`` with the benchmark's settings: it must write exactly NEW_TOKENS tokens."""
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    prompt = model.build_prompt("<image>\n" + question, num_patches_list=[tiles.shape[0]])
    ids = tokenizer([prompt], return_tensors="pt").to(DEVICE)
    out = model.generate(pixel_values=tiles, input_ids=ids.input_ids, attention_mask=ids.attention_mask, **settings())
    if out.shape[-1] != NEW_TOKENS:
        raise RuntimeError(f"expected {NEW_TOKENS} new tokens, got {out.shape[-1]}")


def batch_chat_all(model, tokenizer, tiles, questions, batch_size, new_tokens=NEW_TOKENS):
    answers = []
    for start in range(0, len(questions), batch_size):
        chunk = tiles[start:start + batch_size]
        answers += model.batch_chat(tokenizer, torch.cat(chunk), questions[start:start + batch_size], settings(new_tokens),
                                    num_patches_list=[t.shape[0] for t in chunk])
    return answers


def figures(seconds, requests, peak_bytes, **extra):
    return dict(requests=requests, seconds=round(seconds, 4), requests_per_s=round(requests / seconds, 3),
                output_tokens_per_s=round(requests * NEW_TOKENS / seconds, 1),
                peak_gpu_memory_gb=round(peak_bytes / 1e9, 2), **extra)


def course_rows(folder, attention, set_name, rows, code_label, repeats):
    """Rows (a) and (b) for one request set; a set that does not fit in memory is recorded as such."""
    model, tokenizer = load_course_model(folder, attention)
    images, questions = requests_of(set_name)
    tiles = tiles_of(model, images)
    results = []
    base = dict(code=code_label, attention=attention, request_set=set_name, tiles_per_request=tiles[0].shape[0])
    check_fixed_length(model, tokenizer, tiles[0], questions[0])

    def run_row(row, batch_size, fn, count, warm_up=None):
        try:
            (warm_up or fn)()  # CUDA graphs captured, kernels chosen
            reset_memory_peak()
            times = [timed(fn)[0] for _ in range(repeats if batch_size == REQUESTS else 1)]
            seconds = statistics.median(times)
            entry = figures(seconds, count, memory_peak(), row=row, batch_size=batch_size,
                            all_seconds=[round(t, 4) for t in times], **base)
        except torch.OutOfMemoryError:
            entry = dict(row=row, batch_size=batch_size, error="out of GPU memory", **base)
        reset_memory_peak()
        print(json.dumps(entry), flush=True)
        results.append(entry)

    if "a" in rows:
        count = min(8, REQUESTS) if code_label == "before" else REQUESTS  # one at a time is slow before; its rate is per request
        run_row("chat", 1, lambda: [model.chat(tokenizer, t, q, settings()) for t, q in zip(tiles[:count], questions)], count,
                warm_up=lambda: [model.chat(tokenizer, t, q, settings()) for t, q in zip(tiles[:2], questions)])
    if "b" in rows:
        sizes = [n for n in SWEEP if n <= REQUESTS] if ("sweep" in rows and set_name == "one_tile") else [REQUESTS]
        for size in sizes:
            run_row("batch_chat", size, lambda size=size: batch_chat_all(model, tokenizer, tiles, questions, size), REQUESTS)
        if set_name == "one_tile":  # one decoding step: (64 tokens - 1 token) / 63, batch of 32
            one_token = timed(lambda: batch_chat_all(model, tokenizer, tiles, questions, REQUESTS, 1))[0]
            full = next(r for r in results if r["row"] == "batch_chat" and r["batch_size"] == REQUESTS)
            if "seconds" in full:
                full["decode_step_ms"] = round((full["seconds"] - one_token) / (NEW_TOKENS - 1) * 1000, 2)
                full["prefill_seconds"] = round(one_token, 4)
    del model
    gc.collect()
    reset_memory_peak()
    return results


def engine_rows(folder, set_name, repeats):
    """Row (c): the course's transformers engine, as lessons 02, 05 and 06 use it: pictures and questions in, text
    out, all requests in one ``answer_batch``. Its time includes tiling the pictures (rows (a) and (b) tile them
    beforehand) and stops at an end token, which random weights seldom write (the tokens counted are reported)."""
    from course_utils.engines import GenerationSettings, load_engine

    engine = load_engine(folder, "transformers", device=DEVICE)
    images, questions = requests_of(set_name)
    requests = list(zip(images, questions))
    generation = GenerationSettings(max_new_tokens=NEW_TOKENS)
    engine.answer_batch(requests, generation)  # warm-up: CUDA graphs captured for this batch size
    reset_memory_peak()
    runs = [timed(lambda: engine.answer_batch(requests, generation)) for _ in range(repeats)]
    seconds = statistics.median(run[0] for run in runs)
    tokens = sum(answer.output_tokens for answer in runs[0][1])
    entry = figures(seconds, len(requests), memory_peak(), row="engine", code="transformers engine",
                    attention="sdpa", request_set=set_name, batch_size=len(requests),
                    all_seconds=[round(run[0], 4) for run in runs], output_tokens_counted=tokens)
    entry["output_tokens_per_s"] = round(tokens / seconds, 1)
    print(json.dumps(entry), flush=True)
    engine.close()
    reset_memory_peak()
    return [entry]


def greedy_agreement(folder, dtype):
    """Do the fast path's greedy tokens equal transformers' generate() on the same model (bf16, batch of 32)?

    Three ways to the same answers: ``decode`` with CUDA graphs (what batch_chat runs), ``decode`` without
    graphs, and transformers' ``generate`` with its growing cache; rows identical, and where they differ, the
    first position that differs. Random weights give near-flat distributions where bf16 rounding decides
    near-ties, so the same comparison between two attention kernels of ``generate`` itself (SDPA vs eager)
    says how many rows any change of kernel moves.
    """
    model, tokenizer = load_course_model(folder, "sdpa")
    model.to(getattr(torch, dtype))
    images, questions = requests_of("one_tile")
    tiles = tiles_of(model, images)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    prompts = [model.build_prompt("<image>\n" + q, num_patches_list=[t.shape[0]]) for q, t in zip(questions, tiles)]
    tokenizer.padding_side = "left"
    ids = tokenizer(prompts, return_tensors="pt", padding=True).to(DEVICE)
    with torch.no_grad():
        embeds = model.merge_image_features(ids.input_ids, torch.cat(tiles))
        lm = model.language_model
        graphs = lm.decode(embeds, ids.attention_mask, cuda_graph=on_gpu(), **settings())
        plain = lm.decode(embeds, ids.attention_mask, cuda_graph=False, **settings())
        reference = lm.generate(inputs_embeds=embeds, attention_mask=ids.attention_mask, **settings())
        for layer in lm.model.layers:
            layer.attention.backend = "eager"
        eager_reference = lm.generate(inputs_embeds=embeds, attention_mask=ids.attention_mask, **settings())

    def compare(a, b):
        same = (a == b).all(dim=1)
        first = [int((row_a != row_b).nonzero()[0]) for row_a, row_b, ok in zip(a, b, same) if not ok]
        return dict(identical_rows=int(same.sum()), rows=len(a), first_differing_positions=first)

    entry = dict(row="agreement", request_set="one_tile", batch_size=REQUESTS, dtype=dtype,
                 graphs_vs_no_graphs=compare(graphs, plain), decode_vs_transformers_generate=compare(graphs, reference),
                 generate_sdpa_vs_generate_eager=compare(reference, eager_reference))
    print(json.dumps(entry), flush=True)
    del model, embeds
    gc.collect()
    reset_memory_peak()
    return [entry]


def profile_decode_step(folder, attention, code_label):
    """Host cost of one decoding step of batch_chat (32 one-tile requests): profiler counts, 16 tokens minus 1."""
    from torch.profiler import ProfilerActivity, profile

    model, tokenizer = load_course_model(folder, attention)
    images, questions = requests_of("one_tile")
    tiles = tiles_of(model, images)

    def counts(new_tokens):
        batch_chat_all(model, tokenizer, tiles, questions, REQUESTS, new_tokens)  # warm-up
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            seconds = timed(lambda: batch_chat_all(model, tokenizer, tiles, questions, REQUESTS, new_tokens))[0]
        events = prof.key_averages()
        by_name = {e.key: e.count for e in events}
        gpu_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")

        def total(*parts):
            return sum(n for name, n in by_name.items() if any(p in name for p in parts))

        return dict(
            seconds=seconds, gpu_seconds=gpu_us / 1e6,
            kernel_launches=total("LaunchKernel", "cudaLaunchCooperativeKernel", "cudaGraphLaunch", "cudaMemsetAsync"),
            graph_launches=total("cudaGraphLaunch"),
            tensor_reads_on_host=by_name.get("aten::_local_scalar_dense", 0),  # .item(), bool(t), int(t)
            synchronizations=total("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"),
            device_to_host_copies=total("cudaMemcpyAsync", "cudaMemcpy"),
            top_host_ops=[(e.key, e.count, round(e.self_cpu_time_total / 1e3, 1))
                          for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]],
        )

    one, sixteen = counts(1), counts(16)
    per_step = {k: round((sixteen[k] - one[k]) / 15, 3 if "seconds" in k else 1)
                for k in ("seconds", "gpu_seconds", "kernel_launches", "graph_launches", "tensor_reads_on_host",
                          "synchronizations", "device_to_host_copies")}
    per_step["step_ms"] = round(per_step.pop("seconds") * 1000, 2)
    per_step["gpu_ms"] = round(per_step.pop("gpu_seconds") * 1000, 2)
    entry = dict(row="profile", code=code_label, attention=attention, batch_size=REQUESTS, per_decode_step=per_step,
                 run_16_tokens=dict(seconds=round(sixteen["seconds"], 3), gpu_seconds=round(sixteen["gpu_seconds"], 3),
                                    top_host_ops=sixteen["top_host_ops"]))
    print(json.dumps(entry), flush=True)
    del model
    gc.collect()
    reset_memory_peak()
    return [entry]


def lmdeploy_rows(folder, set_name, knobs_list, repeats):
    """Row (d): LMDeploy's PyTorch engine pipeline on the same requests, for each named set of knobs."""
    from lmdeploy import GenerationConfig, PytorchEngineConfig, VisionConfig, pipeline

    from course_utils.engines.lmdeploy_engine import cache_special_token_ids

    images, questions = requests_of(set_name)
    prompts = list(zip(questions, images))
    results = []
    for name, engine_knobs, vision_knobs, *extras in knobs_list:
        extras = extras[0] if extras else {}
        gen = GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, ignore_eos=True, do_sample=False,
                               **extras.get("generation", {}))
        torch.cuda.empty_cache()
        free_before = torch.cuda.mem_get_info()[0]
        try:
            pipe = pipeline(str(folder), backend_config=PytorchEngineConfig(**engine_knobs),
                            vision_config=VisionConfig(**vision_knobs), log_level="ERROR")
        except Exception as error:  # an engine that cannot start is a result too
            results.append(dict(row="lmdeploy", knobs=name, request_set=set_name, error=repr(error)[:300]))
            continue
        if extras.get("cached_special_ids"):
            cache_special_token_ids(pipe.tokenizer)
        pipe(prompts[:4], gen_config=gen)  # warm-up
        torch.cuda.reset_peak_memory_stats()
        times, tokens = [], 0
        for _ in range(repeats):
            seconds, responses = timed(lambda: pipe(prompts, gen_config=gen))
            times.append(seconds)
            tokens = sum(r.generate_token_len for r in responses)
        held = free_before - torch.cuda.mem_get_info()[0]
        entry = figures(statistics.median(times), len(prompts), torch.cuda.max_memory_allocated(), row="lmdeploy",
                        knobs=name, engine=engine_knobs, vision=vision_knobs, request_set=set_name, batch_size=REQUESTS,
                        all_seconds=[round(t, 4) for t in times], output_tokens_counted=tokens,
                        gpu_memory_held_gb=round(held / 1e9, 2), first_tokens=first_token_times(pipe, prompts, gen))
        print(json.dumps(entry), flush=True)
        results.append(entry)
        pipe.close()
        del pipe
        gc.collect()
        torch.cuda.empty_cache()
    return results


def tensor_parallel_rows(folder, tps, executors, repeats):
    """Row ``tp``: LMDeploy as lesson 02's ``load_engine`` builds it, on ``tp`` GPUs (tensor parallel) with each of
    ``executors`` (None: the course's choice, "mp" on several GPUs), greedy answers to the one-tile set. Each row
    counts the answers identical to those of the first setting and of the setting before it, and between its own
    first and last timed run: a setting listed twice (``uni,uni``) measures how often greedy answers change from
    one engine to the next with nothing else changed. Random weights make near-ties between tokens, which a
    different order of summation or grouping of requests can decide the other way."""
    from course_utils.engines import GenerationSettings, load_engine

    if max(tps) > torch.cuda.device_count():
        raise SystemExit(f"error: tp={max(tps)} needs {max(tps)} GPUs and torch sees {torch.cuda.device_count()}")
    images, questions = requests_of("one_tile")
    requests = list(zip(images, questions))
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=0.0)
    reference, previous, results = None, None, []
    for tp, executor in [(tp, executor) for tp in tps for executor in executors]:
        try:
            engine = load_engine(folder, "lmdeploy", tp=tp, executor=executor, session_len=8192,
                                 cache_max_entry_count=0.3, max_batch_size=REQUESTS)
        except Exception as error:  # e.g. no executor for several GPUs in this environment
            results.append(dict(row="tp", tp=tp, executor=executor, request_set="one_tile", error=repr(error)[:300]))
            continue
        started = time.perf_counter()
        engine.answer_batch(requests[:4], settings)  # warm-up
        first_answers_s = time.perf_counter() - started
        runs = [timed(lambda: engine.answer_batch(requests, settings)) for _ in range(repeats)]
        chosen = engine.backend_config.distributed_executor_backend or "uni"
        engine.close()
        answers = [answer.text for answer in runs[-1][1]]
        reference, previous = reference or answers, previous or answers
        entry = dict(row="tp", tp=tp, executor=chosen, request_set="one_tile", batch_size=REQUESTS,
                     requests_per_s=round(REQUESTS / statistics.median(t for t, _ in runs), 3),
                     all_seconds=[round(t, 4) for t, _ in runs], warm_up_seconds=round(first_answers_s, 3),
                     output_tokens=sum(answer.output_tokens for answer in runs[-1][1]),
                     same_answers_as_first_setting=same_count(reference, answers),
                     same_answers_as_previous_setting=same_count(previous, answers),
                     same_answers_first_and_last_timed_run=same_count([a.text for a in runs[0][1]], answers))
        print(json.dumps(entry), flush=True)
        results.append(entry)
        previous = answers
    return results


def same_count(answers, others) -> int:
    """How many answers are word for word the same, request by request."""
    return sum(a == b for a, b in zip(answers, others))


def first_token_times(pipe, prompts, gen):
    """When each request's first token arrived in one streamed run of the set: requests that start decoding late
    (admitted in a later prefill) stretch the run by their delay. A wave is a group of requests that started together
    (gaps under 20 ms)."""
    start, first = time.perf_counter(), {}
    for output in pipe.stream_infer(prompts, gen_config=gen):
        first.setdefault(output.index, time.perf_counter() - start)
    seconds = sorted(first.values())
    return dict(run_seconds=round(time.perf_counter() - start, 4), earliest=round(seconds[0], 4),
                median=round(statistics.median(seconds), 4), latest=round(seconds[-1], 4),
                waves=1 + sum(later - earlier > 0.02 for earlier, later in zip(seconds, seconds[1:])))


# Named sets of (PytorchEngineConfig, VisionConfig) knobs, and optionally extras: GenerationConfig fields, or the
# course's cached special-token ids (lmdeploy_engine.cache_special_token_ids). The PyTorch engine encodes images
# inside its own prefill, so VisionConfig.max_batch_size (TurboMind's vision batch) should change nothing here: the
# "+ vision batch 32" set checks that. Requests reach the engine one by one (LMDeploy preprocesses images in one
# thread) and a running batch admits new requests only every `prefill_interval` decode steps, in chunks of at most
# `max_prefill_token_num` tokens: the other sets measure those two scheduler knobs.
HALF_CACHE = dict(session_len=8192, cache_max_entry_count=0.5)
LESSON_02_ENGINE = dict(session_len=8192, cache_max_entry_count=0.2, max_batch_size=32)  # lesson 02's knobs cell
LESSON_02_VISION = dict(max_batch_size=8)
LMDEPLOY_KNOBS = [
    ("defaults", {}, {}),
    ("session 8k, cache 0.5", HALF_CACHE, {}),
    ("session 8k, cache 0.5, + vision batch 32", HALF_CACHE, dict(max_batch_size=32)),
    ("session 8k, cache 0.5, max_batch_size 32", {**HALF_CACHE, "max_batch_size": 32}, {}),
    ("session 8k, cache 0.5, prefill 16k tokens", {**HALF_CACHE, "max_prefill_token_num": 16384}, {}),
    ("session 8k, cache 0.5, prefill every 4 steps", {**HALF_CACHE, "prefill_interval": 4}, {}),
    ("session 8k, cache 0.5, prefill every 4 steps, 16k tokens",
     {**HALF_CACHE, "prefill_interval": 4, "max_prefill_token_num": 16384}, {}),
    ("session 8k, cache 0.5, prefill every step, 16k tokens",
     {**HALF_CACHE, "prefill_interval": 1, "max_prefill_token_num": 16384}, {}),
    ("lesson 02's knobs", LESSON_02_ENGINE, LESSON_02_VISION),
    ("defaults, special tokens kept in the text", {}, {}, {"generation": dict(skip_special_tokens=False)}),
    ("defaults, special-token ids cached", {}, {}, {"cached_special_ids": True}),
    ("lesson 02's knobs, special-token ids cached", LESSON_02_ENGINE, LESSON_02_VISION, {"cached_special_ids": True}),
]


def run(args):
    global DEVICE
    DEVICE = args.device
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.model:
        folder = Path(args.model)
    else:
        folder = model_folder(work_dir, Path(args.remote_code) if args.remote_code else None, args.preset)
    global REQUESTS
    REQUESTS = args.requests
    rows = set(args.rows.split(","))
    results = []
    if "agreement" in rows:
        for dtype in args.agreement_dtypes.split(","):
            results += greedy_agreement(folder, dtype)
    for attention in args.attention.split(","):
        if "profile" in rows:
            results += profile_decode_step(folder, attention, args.label)
        if rows & {"a", "b"}:
            for set_name in args.sets.split(","):
                results += course_rows(folder, attention, set_name, rows, args.label, args.repeats)
    if "c" in rows:
        for set_name in args.sets.split(","):
            results += engine_rows(folder, set_name, args.repeats)
    if "d" in rows:
        chosen = range(len(LMDEPLOY_KNOBS)) if args.lmdeploy_knobs == "all" else args.lmdeploy_knobs.split(",")
        knobs = [LMDEPLOY_KNOBS[int(i)] for i in chosen]
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        for set_name in args.sets.split(","):
            for row in lmdeploy_rows(folder, set_name, knobs, args.repeats):
                results.append({**row, "python_switch_interval_s": round(sys.getswitchinterval(), 6)})
    if "tp" in rows:
        executors = [name or None for name in args.executors.split(",")]
        results += tensor_parallel_rows(folder, [int(tp) for tp in args.tp.split(",")], executors, args.repeats)
    versions = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
    try:
        versions["lmdeploy"] = __import__("lmdeploy").__version__
    except ImportError:
        pass
    device = torch.cuda.get_device_name() if on_gpu() else DEVICE
    Path(args.out).write_text(json.dumps(dict(device=device, versions=versions,
                                              results=results), indent=1, ensure_ascii=False) + "\n")


def table(results):
    """The README table: one line per measured row, requests/s, and ratios to the course's (a) row and to the
    official code's recorded figure for the same work (one-tile set: ``chat`` for one request at a time,
    ``batch_chat`` for 32 at once; the official code was not measured at other batch sizes)."""
    chat = {(r["request_set"], r.get("code")): r["requests_per_s"] for r in results
            if r["row"] == "chat" and r.get("attention") == "sdpa" and "requests_per_s" in r}
    lines = ["| request set | row | code / knobs | batch | req/s | output tok/s | peak GPU GB | x course (a) | x official |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r["row"] not in ("chat", "batch_chat", "engine", "lmdeploy"):
            continue
        who = r.get("knobs") or f"{r['code']} ({r['attention']})"
        if "error" in r:
            lines.append(f"| {r['request_set']} | {r['row']} | {who} | {r.get('batch_size', '')} | {r['error']} | | | | |")
            continue
        base = chat.get((r["request_set"], "after"))
        versus_a = f"{r['requests_per_s'] / base:.1f}" if base else ""
        official = {1: OFFICIAL_RECORDED["chat"], 32: OFFICIAL_RECORDED["batch_chat"]}.get(r["batch_size"])
        official = f"{r['requests_per_s'] / official:.2f}" if official and r["request_set"] == "one_tile" else ""
        memory = r.get("gpu_memory_held_gb", r["peak_gpu_memory_gb"])
        lines.append(f"| {r['request_set']} | {r['row']} | {who} | {r['batch_size']} | {r['requests_per_s']:.2f} | "
                     f"{r['output_tokens_per_s']:.0f} | {memory} | {versus_a} | {official} |")
    return "\n".join(lines)


def combine(args):
    parts = [json.loads(Path(p).read_text()) for p in args.parts]
    results = [r for part in parts for r in part["results"]]
    merged = dict(
        setup=dict(device=parts[0]["device"], versions=parts[0]["versions"], dtype="bfloat16", requests=REQUESTS,
                   new_tokens=NEW_TOKENS, model="InternVL2-2B shapes, random weights (seed 0)",
                   request_sets={k: f"{w}x{h}" for k, (w, h) in REQUEST_SETS.items()},
                   official_code_recorded=OFFICIAL_RECORDED),
        results=results,
    )
    Path(args.out).write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
    print(table(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    run_parser = sub.add_parser("run", help="measure rows on this GPU and write them to --out")
    run_parser.add_argument("--rows", default="agreement,profile,a,b,sweep,c,d",
                            help="any of agreement,profile,a,b,sweep,c,d,tp (tp: several GPUs)")
    run_parser.add_argument("--agreement-dtypes", default="bfloat16,float32")
    run_parser.add_argument("--lmdeploy-knobs", default="0,1,2", help="which LMDEPLOY_KNOBS entries (indices, or all)")
    run_parser.add_argument("--tp", default="1,2", help="GPU counts for row tp (LMDeploy tensor parallel)")
    run_parser.add_argument("--executors", default="", help="PyTorch-engine executors for row tp, e.g. uni,mp "
                                                            "(empty: the course's choice for each GPU count)")
    run_parser.add_argument("--switch-interval", type=float, default=None,
                            help="Python's GIL switch interval in seconds for row d (5 ms by default): LMDeploy's "
                                 "request front end shares the interpreter with its engine loop")
    run_parser.add_argument("--requests", type=int, default=REQUESTS, help="requests per set (fewer: a quick check)")
    run_parser.add_argument("--sets", default="one_tile,photo_13_tiles")
    run_parser.add_argument("--attention", default="sdpa", help="sdpa, eager or both (comma-separated)")
    which_code = run_parser.add_mutually_exclusive_group()
    which_code.add_argument("--remote-code", help="folder of InternVL2 .py files to measure instead of the course's")
    run_parser.add_argument("--label", default="after", help="name of the measured code in the results")
    run_parser.add_argument("--repeats", type=int, default=3, help="timed runs of the 32-request rows (median kept)")
    run_parser.add_argument("--work-dir", default="/tmp/generation-throughput")
    run_parser.add_argument("--preset", default="internvl2-2b", help="model shapes (tiny: a quick check of the script)")
    which_code.add_argument("--model", help="an InternVL2 model folder instead of --preset's random weights, e.g. "
                            "lesson 05's fine-tuned model, whose greedy answers are not near-ties")
    run_parser.add_argument("--device", default="cuda")
    run_parser.add_argument("--out", required=True)
    run_parser.set_defaults(handler=run)
    combine_parser = sub.add_parser("combine", help="merge measured parts into the results file, print the table")
    combine_parser.add_argument("parts", nargs="+")
    combine_parser.add_argument("--out", required=True)
    combine_parser.set_defaults(handler=combine)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
