"""Build InternVL2 model folders from the course's own code: the tiny base model and the 2B-shaped preset.

``build_model_dir(out)`` writes exactly what an official InternVL2 checkpoint folder holds: ``config.json``
(with ``auto_map`` pointing at the remote code), the remote-code ``.py`` files, ``model.safetensors``,
``generation_config.json`` and a tokenizer (``tokenizer.json`` + ``tokenizer_config.json`` with the chat
template and the special tokens ``<img> </img> <IMG_CONTEXT> <|im_start|> <|im_end|>``). The weights are
random but deterministic by seed, or, for the default model of every lesson (:func:`ensure_tiny_model`), the
tiny base's pretrained weights that ship in ``tiny_base/`` beside this file (made by ``python -m course_utils
pretrain-tiny-base``, see :mod:`course_utils.pretraining`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path

from .errors import CourseError
from .model_download import DEFAULT_MODEL_REPO, download_model
from .outputs import check_output, staged_output
from .paths import DOWNLOAD_KEYWORD, env_path, is_hub_id, tiny_model_dir

BUILD_INFO_FILE = "course_build.json"
TINY_BASE_DIR = Path(__file__).resolve().parent / "tiny_base"  # the pretrained base's weights and their record
MODEL_KIND = "built-model"  # the outputs marker's kind: an InternVL2 folder the course built (random or shipped weights)
BUILDER_VERSION = 1  # bump when the folder layout written here changes, so stale default models are rebuilt

SPECIAL_TOKENS = [
    "<unk>", "<s>", "</s>",  # ids 0, 1, 2 as in InternLM2
    "<|im_start|>", "<|im_end|>",
    "<img>", "</img>", "<IMG_CONTEXT>",
    "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
]

def chat_template() -> str:
    """The tokenizer's chat template (what LMDeploy 0.10 renders prompts with).

    It writes exactly what ``model.chat`` (the ``internlm2-chat`` conversation) and XTuner's InternVL dataset
    write: InternVL's system message unless the conversation brings its own, and turns joined without newlines.
    A model answers best in the format it was trained on, so all three agree (tests/test_chat_template.py).
    """
    from .internvl.conversation import INTERNVL_SYSTEM_MESSAGE

    return (
        "{{ bos_token }}{% if messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + INTERNVL_SYSTEM_MESSAGE + "<|im_end|>' }}{% endif %}"
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


# A small bilingual corpus for the byte-level BPE merges (Chinese words joined by punctuation, so that they are
# learnt without a leading space): byte fallback already covers every string, the
# merges only make frequent food-QA words short. Its content decides the vocabulary, so it is part of the build.
TOKENIZER_CORPUS = [
    "图片中的食物通常属于哪个菜系？", "图片中的食物的主要食材是什么？", "这道菜来自哪个地区？", "图中的菜是",
    "请从下列选项中选择正确答案，只回答选项字母。", "答案：", "选项", "（A) （B) （C) （D)",
    "川菜，粤菜，鲁菜，苏菜，浙菜，闽菜，湘菜，徽菜，东北菜，新疆菜，西北菜，云南菜，上海菜，京菜",
    "四川，重庆，广东，山东，江苏，浙江，福建，湖南，安徽，东北，新疆，陕西，云南，上海，北京",
    "猪肉，牛肉，羊肉，鸡肉，鸭肉，鱼，虾，豆腐，鸡蛋，土豆，茄子，白菜，辣椒，面条，米饭，饺子，包子",
    "锅包肉，宫保鸡丁，麻婆豆腐，红烧肉，回锅肉，鱼香肉丝，北京烤鸭，小笼包，大盘鸡，羊肉串，白切鸡，糖醋里脊",
    "红色，绿色，黄色，白色，棕色，圆形，方形，条状，片状，餐馆，家常，街头",
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
    "You are an AI assistant whose name is InternLM (书生·浦语).",
    "Which cuisine does the food in the image belong to? What is the main ingredient of the dish?",
    "Answer with the letter of the correct option. The answer is A B C D.",
    "Describe the image. The dish is served on a plate with a pattern. Sichuan Cantonese Shandong Xinjiang",
    "0 1 2 3 4 5 6 7 8 9 , . ? ! : ; ( ) [ ] { } \" ' - _ / \n",
]
TOKENIZER_VOCAB_SIZE = 2048

# InternVL2's architecture at about a thousandth of InternVL2-2B's size (2.9 M numbers): small enough to train
# and answer on a laptop's CPU, large enough to learn to describe the pictures of its pretraining corpus.
TINY_PRESET = {
    "vision_config": dict(
        image_size=224, patch_size=14, hidden_size=128, num_attention_heads=4, intermediate_size=256,
        num_hidden_layers=4, qkv_bias=True, norm_type="layer_norm", qk_normalization=False,
    ),
    "llm_config": dict(
        hidden_size=192, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=4, max_position_embeddings=8192, rope_theta=1000000,
        rope_scaling={"type": "dynamic", "factor": 2.0},
    ),
    "force_image_size": 224,
    # one 224-px tile a picture (InternVL2-2B: up to 12 tiles of 448 px and a thumbnail): the synthetic dishes
    # are drawn to be read at this size, and each tile costs a CPU as much as the rest of the prompt
    "max_dynamic_patch": 1,
}

# The published InternVL2-2B shapes: InternViT-300M-448px + InternLM2-chat-1.8B (random weights).
INTERNVL2_2B_PRESET = {
    "vision_config": dict(
        image_size=448, patch_size=14, hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
        num_hidden_layers=24, qkv_bias=True, norm_type="layer_norm", qk_normalization=False,
    ),
    "llm_config": dict(
        vocab_size=92553, hidden_size=2048, intermediate_size=8192, num_attention_heads=16,
        num_key_value_heads=8, num_hidden_layers=24, max_position_embeddings=32768, rope_theta=1000000,
        rope_scaling={"type": "dynamic", "factor": 2.0},
    ),
    "force_image_size": 448,
    "max_dynamic_patch": 12,
}

PRESETS = {"tiny": TINY_PRESET, "internvl2-2b": INTERNVL2_2B_PRESET}


def build_tokenizer():
    """A byte-level BPE tokenizer with InternLM2's special tokens and chat template, built offline in ~1 s."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    from .pretraining.corpus import vocabulary_texts

    backend.train_from_iterator(TOKENIZER_CORPUS + vocabulary_texts(), trainer=trainer)
    # every encoded prompt starts with <s>, as InternLM2's tokenizer does (XTuner relies on it)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", SPECIAL_TOKENS.index("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        chat_template=chat_template(),
        model_max_length=8192,
    )


def build_config(preset: str = "tiny", vocab_size: int | None = None):
    """The InternVLChatConfig of a preset, with ``auto_map`` entries that point at the remote code."""
    from .internvl import InternVLChatConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    spec = json.loads(json.dumps(PRESETS[preset]))  # a deep copy
    llm = spec["llm_config"]
    llm.setdefault("vocab_size", vocab_size)
    llm.update(
        architectures=["InternLM2ForCausalLM"],
        attn_implementation="sdpa",
        torch_dtype="bfloat16",
        auto_map={
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
        },
    )
    spec["vision_config"].update(architectures=["InternVisionModel"], torch_dtype="bfloat16")
    config = InternVLChatConfig(
        template="internlm2-chat", downsample_ratio=0.5, ps_version="v2", select_layer=-1,
        dynamic_image_size=True, use_thumbnail=True, min_dynamic_patch=1, **spec,
    )
    config.architectures = ["InternVLChatModel"]
    config.torch_dtype = "bfloat16"
    config.auto_map = {
        "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
        "AutoModel": "modeling_internvl_chat.InternVLChatModel",
        "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
    }
    return config


def build_model(config, seed: int = 0, device: str = "cpu"):
    """A randomly initialised InternVLChatModel; ``device="meta"`` allocates nothing (for layout checks)."""
    import torch

    from .internvl import InternVLChatModel

    torch.manual_seed(seed)
    with torch.device(device):
        return InternVLChatModel(config).eval()


def remote_code_fingerprint() -> str:
    """A hash of the remote-code files, so a default model built from older code is rebuilt."""
    from .internvl import REMOTE_CODE_FILES, SOURCE_DIR

    digest = hashlib.sha256(str(BUILDER_VERSION).encode())
    for name in REMOTE_CODE_FILES:
        digest.update((SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def copy_remote_code(model_dir: Path) -> None:
    """Copy the model's ``.py`` files into ``model_dir`` (they are what ``trust_remote_code`` loads)."""
    from .internvl import REMOTE_CODE_FILES, SOURCE_DIR

    for name in REMOTE_CODE_FILES:
        shutil.copy2(SOURCE_DIR / name, Path(model_dir) / name)


def check_device(device: str) -> str:
    """``device`` if torch can allocate there; a CourseError naming the fix otherwise (before any work)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's notice about pynvml: nothing a learner can act on
        import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # AssertionError: "Torch not compiled with CUDA enabled"
        raise CourseError(f"cannot create weights on device {device!r} ({error}); use --device cpu") from error
    return device


def build_model_dir(
    out: str | Path, preset: str = "tiny", seed: int = 0, device: str = "cpu", force: bool = False,
    layers: int | None = None, weights: Path | None = None,
) -> Path:
    """Write a complete InternVL2 model folder for ``preset`` to ``out`` and return it.

    The folder appears only when complete (see :mod:`course_utils.outputs`); a folder the course did not make is
    refused unless ``force``. ``layers`` keeps that many layers of the ViT and of the LLM: the preset's widths and
    vocabulary at a fraction of its memory, for measurements on a CPU. ``weights`` (a safetensors file of exactly
    the preset's tensors) replaces the random weights.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    out = check_output(out, MODEL_KIND, force=force)
    check_device(device)
    import torch
    from safetensors.torch import save_file

    tokenizer = build_tokenizer()
    config = build_config(preset, vocab_size=len(tokenizer))
    if layers is not None:
        config.vision_config.num_hidden_layers = config.llm_config.num_hidden_layers = layers
    model = build_model(config, seed=seed, device="meta" if weights else device)
    with staged_output(out, MODEL_KIND, force=force) as staging:
        # written directly: save_pretrained would import DeepSpeed (through accelerate) only to unwrap nothing
        config.save_pretrained(staging)
        if weights:
            check_weights(weights, model.state_dict())
            shutil.copy2(weights, staging / "model.safetensors")
        else:
            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()},
                      staging / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save_pretrained(staging)
        generation = {"bos_token_id": 1, "eos_token_id": [2, tokenizer.convert_tokens_to_ids("<|im_end|>")], "pad_token_id": 2}
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        copy_remote_code(staging)
        build_info = {"preset": preset, "seed": seed, "fingerprint": remote_code_fingerprint()}
        if weights:
            build_info["weights_sha256"] = file_sha256(weights)
        if layers is not None:  # never the current build of the whole preset
            build_info["layers"] = layers
        (staging / BUILD_INFO_FILE).write_text(json.dumps(build_info, indent=2) + "\n")
    return out


def check_weights(weights: Path, expected: dict) -> None:
    """ValueError unless the safetensors file ``weights`` holds exactly ``expected``'s tensor names and shapes."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as file:
        shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    wanted = {name: tuple(value.shape) for name, value in expected.items()}
    if shapes != wanted:
        differing = sorted(set(shapes.items()) ^ set(wanted.items()))[:3]
        raise ValueError(f"{weights} does not hold this model's tensors (first differences: {differing}): "
                         "rebuild them with `python -m course_utils pretrain-tiny-base`")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_base_weights() -> Path:
    """The tiny base's pretrained weights in the repository, checked against the checksum of their record."""
    weights, record = TINY_BASE_DIR / "model.safetensors", TINY_BASE_DIR / "pretraining.json"
    if not weights.is_file() or not record.is_file():
        raise CourseError(f"the tiny base's weights are missing from {TINY_BASE_DIR}: restore them with "
                          "`git checkout -- course_utils/tiny_base` (or rebuild: python -m course_utils "
                          "pretrain-tiny-base OUT --device cuda --ship)")
    expected = json.loads(record.read_text(encoding="utf-8"))["weights_sha256"]
    if file_sha256(weights) != expected:
        raise CourseError(f"{weights} does not match the checksum in {record.name}: restore it with "
                          "`git checkout -- course_utils/tiny_base`")
    return weights


def is_current_build(model_dir: Path, preset: str = "tiny", seed: int = 0, weights: Path | None = None) -> bool:
    """True when ``model_dir`` holds a finished build of this preset, seed and weights from the current code."""
    info_file = Path(model_dir) / BUILD_INFO_FILE
    if not info_file.exists():
        return False
    expected = {"preset": preset, "seed": seed, "fingerprint": remote_code_fingerprint()}
    if weights:
        expected["weights_sha256"] = file_sha256(weights)
    return json.loads(info_file.read_text()) == expected


def ensure_tiny_model() -> Path:
    """The default model of every lesson: the pretrained tiny base, its folder built (in a second) if missing or
    made from older code or weights."""
    model_dir, weights = tiny_model_dir(), shipped_base_weights()
    if not is_current_build(model_dir, weights=weights):
        build_model_dir(model_dir, weights=weights)
    return model_dir


def resolve_model_path(model_path: str | Path | None = None) -> str:
    """The model folder a lesson uses: ``model_path``, else ``$MODEL_PATH``, else the embedded tiny model (built
    if needed).

    A local folder, a model id (``OpenGVLab/InternVL2-2B``) or ``download`` (that model) are accepted; an id is
    downloaded into ``RUN_DIR/models/`` on first use, from where ``MODEL_SOURCE`` says (:mod:`.model_download`).
    """
    if model_path is not None and not str(model_path).strip():
        raise ValueError("the model path is empty: give an InternVL2 folder, a model id or 'download', or None for "
                         "the default model")
    chosen = str(model_path or env_path("MODEL_PATH") or "").strip()
    if not chosen:
        return str(ensure_tiny_model())
    if chosen == DOWNLOAD_KEYWORD:
        return str(download_model(DEFAULT_MODEL_REPO))
    if Path(chosen).expanduser().exists():
        return str(Path(chosen).expanduser().resolve())
    if is_hub_id(chosen):
        return str(download_model(chosen))
    raise FileNotFoundError(f"model folder {chosen} does not exist: set MODEL_PATH to an InternVL2 folder, a model "
                            f"id such as {DEFAULT_MODEL_REPO} or 'download', or leave it unset for the embedded tiny "
                            "model")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-tiny-model", help="build an InternVL2-format model folder with random weights (offline, seconds)"
    )
    parser.add_argument("out", help="output folder (new, empty, or a model this command built earlier)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="tiny (CPU, default model of the lessons) or internvl2-2b (real shapes, for GPU benchmarks)")
    parser.add_argument("--device", default="cpu", help="where to initialise the weights (cuda is faster for internvl2-2b)")
    parser.add_argument("--force", action="store_true", help="replace OUT even if the course did not make it")
    parser.set_defaults(handler=_make_tiny_model_cli)


def _make_tiny_model_cli(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = build_model_dir(args.out, preset=args.preset, seed=args.seed, device=args.device, force=args.force)
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"built {args.preset} InternVL2 model in {out} ({size_mb:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0
