"""What of the LMDeploy backend and its api_server can be checked without a GPU: the chat-template check, the
engine configs, generation settings, the messages LMDeploy receives, the api_server command line (parsed
by LMDeploy's own argument parser), and a remote-code config's round trip through a worker process."""

import json
import multiprocessing
import pickle
import shutil

import pytest
from PIL import Image

from course_utils.engines import GenerationSettings
from course_utils.engines.lmdeploy_engine import (backend_config, cache_special_token_ids, check_chat_template,
                                                  conversation_messages, generation_config, model_system_message,
                                                  pickle_remote_code_configs_by_loading)
from course_utils.engines.serving import lmdeploy_command


def test_a_model_folder_without_chat_template_is_refused_with_the_fix(tiny_model_path, tmp_path):
    assert "<|im_start|>" in check_chat_template(tiny_model_path)
    folder = tmp_path / "finetuned"
    shutil.copytree(tiny_model_path, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no chat_template.*Copy tokenizer_config.json from the base model"):
        check_chat_template(folder)
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match="no chat_template"):
        check_chat_template(folder)
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_chat_template(folder)


def test_cached_special_token_ids_give_the_same_streamed_text_without_converting_them_per_token(tiny_model_path):
    from lmdeploy.tokenizer import DetokenizeState, Tokenizer

    def stream_text(tokenizer, ids):  # how LMDeploy turns each new token of an answer into text
        state, pieces = DetokenizeState(), []
        for end in range(1, len(ids) + 1):
            piece, state = tokenizer.detokenize_incrementally(ids[:end], state, skip_special_tokens=True)
            pieces.append(piece)
        return pieces

    tokenizer = Tokenizer(str(tiny_model_path))
    hf_tokenizer = tokenizer.model.model
    special = hf_tokenizer.all_special_ids
    ids = hf_tokenizer.encode("宫保鸡丁 is a Sichuan dish.", add_special_tokens=False)
    ids = ids[:4] + special[:2] + ids[4:]  # special tokens in the middle are dropped from the text
    before = stream_text(tokenizer, ids)
    assert "".join(before) == hf_tokenizer.decode(ids, skip_special_tokens=True)

    cache_special_token_ids(tokenizer)
    conversions = []
    convert = hf_tokenizer.convert_tokens_to_ids
    hf_tokenizer.convert_tokens_to_ids = lambda tokens: conversions.append(tokens) or convert(tokens)
    assert stream_text(tokenizer, ids) == before
    assert hf_tokenizer.all_special_ids == special and conversions == []


def test_backend_config_carries_the_knobs():
    from lmdeploy import PytorchEngineConfig, TurbomindEngineConfig

    config = backend_config("lmdeploy", dtype="bfloat16", session_len=4096, cache_max_entry_count=0.2,
                            max_batch_size=32)
    assert isinstance(config, PytorchEngineConfig)
    assert (config.dtype, config.session_len, config.cache_max_entry_count, config.max_batch_size) == (
        "bfloat16", 4096, 0.2, 32)
    assert backend_config("lmdeploy").cache_max_entry_count == 0.8  # LMDeploy's default kept
    assert isinstance(backend_config("turbomind", session_len=2048), TurbomindEngineConfig)
    assert backend_config("lmdeploy").tp == 1
    assert backend_config("lmdeploy", tp=2).tp == backend_config("turbomind", tp=2).tp == 2  # tensor parallel
    # one GPU: LMDeploy's choice (in this process); several: worker processes without Ray, unless asked
    assert backend_config("lmdeploy").distributed_executor_backend is None
    assert backend_config("lmdeploy", tp=2).distributed_executor_backend == "mp"
    assert backend_config("lmdeploy", tp=2, executor="ray").distributed_executor_backend == "ray"
    with pytest.raises(ValueError, match="executor is the PyTorch engine's"):
        backend_config("turbomind", tp=2, executor="mp")
    with pytest.raises(ValueError, match="one of uni, mp, ray"):
        backend_config("lmdeploy", executor="threads")
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        backend_config("lmdeploy", dtype="float32")
    assert backend_config("lmdeploy").quant_policy == 0  # LMDeploy's default: a 16-bit KV cache
    assert backend_config("lmdeploy", quant_policy=8).quant_policy == 8
    assert backend_config("turbomind", quant_policy=4).quant_policy == 4
    with pytest.raises(ValueError, match="quant_policy is 0"):
        backend_config("lmdeploy", quant_policy=2)


@pytest.mark.parametrize("quant_policy", [0, 8, 4])
def test_kv_bytes_per_token_are_lmdeploys_own(quant_policy):
    """The course's arithmetic of the KV cache equals LMDeploy's block size (16-bit, 8-bit and 4-bit caches)."""
    import torch
    from lmdeploy.pytorch.config import ModelConfig
    from lmdeploy.pytorch.engine.cache_engine import CacheEngine

    from course_utils.engines.kv_cache import BLOCK_SIZE, LLMShape
    from course_utils.tiny_model import INTERNVL2_2B_PRESET

    llm = INTERNVL2_2B_PRESET["llm_config"]
    shape = LLMShape.from_llm_config(llm)
    config = ModelConfig(hidden_size=llm["hidden_size"], num_layers=shape.layers,
                         num_attention_heads=llm["num_attention_heads"], num_key_value_heads=shape.kv_heads,
                         bos_token_id=1, eos_token_id=[2], head_dim=shape.head_dim, dtype=torch.bfloat16)
    lmdeploy_block = CacheEngine.get_cache_block_size(BLOCK_SIZE, config, 1, quant_policy)
    assert shape.bytes_per_token(quant_policy=quant_policy) * BLOCK_SIZE == lmdeploy_block


def test_generation_settings_map_to_lmdeploy():
    greedy = generation_config(GenerationSettings(max_new_tokens=12))
    assert (greedy.max_new_tokens, greedy.do_sample) == (12, False)
    sampled = generation_config(GenerationSettings(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1,
                                                   seed=3))
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.top_k) == (True, 0.7, 0.9, 20)
    assert (sampled.repetition_penalty, sampled.random_seed) == (1.1, 3)


def test_messages_carry_the_model_cards_system_message_and_the_image_once(tiny_model_path):
    system = model_system_message(tiny_model_path)
    assert system.startswith("你是由上海人工智能实验室")  # InternVL2's, as model.chat sends it
    dish = Image.new("RGB", (64, 48))
    history = [("<image>\n这是什么菜？", "锅包肉")]
    messages = conversation_messages(system, dish, "它来自哪里？", history, max_dynamic_patch=4)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    first = messages[1]["content"]
    assert first[0] == {"type": "text", "text": "这是什么菜？"}
    assert first[1]["type"] == "image_data" and first[1]["image_data"]["max_dynamic_patch"] == 4
    assert first[1]["image_data"]["data"].size == (64, 48)
    assert messages[2:] == [{"role": "assistant", "content": "锅包肉"}, {"role": "user", "content": "它来自哪里？"}]
    with pytest.raises(ValueError, match="pass the same image again"):
        conversation_messages(system, None, "它来自哪里？", history)


def test_the_api_server_command_is_what_lmdeploy_parses(lmdeploy_parser, tiny_model_path):
    command = lmdeploy_command(tiny_model_path, "127.0.0.1", 23456, model_name="tiny", dtype="bfloat16",
                               session_len=4096, cache_max_entry_count=0.3, max_batch_size=16, vision_batch_size=8)
    assert command[1:3] == ["-m", "lmdeploy"]
    args = lmdeploy_parser.parse_args(command[3:])
    assert (args.model_path, args.backend, args.server_name, args.server_port) == (
        str(tiny_model_path), "pytorch", "127.0.0.1", 23456)
    assert (args.model_name, args.api_keys, args.dtype, args.session_len) == ("tiny", None, "bfloat16", 4096)
    # the keys are added inside the process (serving.KEYS_FROM_ENVIRONMENT), as a flag lmdeploy parses
    assert lmdeploy_parser.parse_args([*command[3:], "--api-keys", "k1", "k2"]).api_keys == ["k1", "k2"]
    assert (args.cache_max_entry_count, args.max_batch_size, args.vision_max_batch_size) == (0.3, 16, 8)
    defaults = lmdeploy_parser.parse_args(lmdeploy_command(tiny_model_path, "127.0.0.1", 1, model_name="m")[3:])
    assert defaults.api_keys is None and defaults.cache_max_entry_count == 0.8
    assert defaults.tp == 1
    two_gpus = lmdeploy_command(tiny_model_path, "127.0.0.1", 1, model_name="m", tp=2)
    assert lmdeploy_parser.parse_args(two_gpus[3:]).tp == 2
    turbomind = lmdeploy_command(tiny_model_path, "127.0.0.1", 1, model_name="m", engine="turbomind")
    assert lmdeploy_parser.parse_args(turbomind[3:]).backend == "turbomind"


def worker_round_trip(config_bytes, model_path, results):
    """What LMDeploy's ``mp`` worker does with the model config: receive it, load the model folder's remote code
    (``AutoConfig``, as building the model does), and send the config back (the input processor holds it)."""
    from transformers import AutoConfig

    config = pickle.loads(config_bytes)
    loaded = AutoConfig.from_pretrained(model_path, trust_remote_code=True)
    try:
        results.put((type(config) is type(loaded), pickle.dumps(config)))
    except pickle.PicklingError as error:
        results.put((None, str(error)))


def round_trip(config, model_path):
    context = multiprocessing.get_context("spawn")  # as LMDeploy starts its workers
    results = context.Queue()
    worker = context.Process(target=worker_round_trip, args=(pickle.dumps(config), str(model_path), results))
    worker.start()
    answer = results.get(timeout=120)
    worker.join(timeout=60)
    return answer


def test_a_remote_code_config_travels_to_a_worker_process_and_back(tiny_model_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_path, trust_remote_code=True)
    assert type(config).__module__.startswith("transformers_modules.")  # the model folder's own code
    same_class, sent_back = round_trip(config, tiny_model_path)
    assert same_class is None and "not the same object as" in sent_back  # the failure LMDeploy's engine hung on
    pickle_remote_code_configs_by_loading(config)
    same_class, sent_back = round_trip(config, tiny_model_path)
    assert same_class is True  # the worker's later load kept the class it unpickled with
    returned = pickle.loads(sent_back)
    assert type(returned) is type(config) and returned.to_dict() == config.to_dict()
    assert type(returned.vision_config) is type(config.vision_config)  # sub-configs too
