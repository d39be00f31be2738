"""OpenAI-compatible serving on the CPU: the course's server as a managed subprocess, a real ``openai`` client
round trip (plain and streamed), OpenAI-style errors for bad requests, API keys, ports and a clean stop; and how it
holds under hostile clients: abandoned streams, a crowd behind a stream, a full queue, disconnects, huge inputs.

Every client here talks to 127.0.0.1 with a timeout, and every loop is bounded."""

import base64
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import psutil
import pytest
import torch
import uvicorn
from PIL import Image

from course_utils.chat import image_pixel_values
from course_utils.engines.client import ask, ask_stream, image_data_url, user_message
from course_utils.engines import load_engine
from course_utils.engines.openai_app import (DEFAULT_MAX_TOKENS, MAX_IMAGE_PIXELS, MAX_REQUEST_BYTES, RequestError,
                                             create_app, decode_data_url, fitting_max_tokens)
from course_utils.engines.serving import (LOOPBACK, ManagedServer, PortInUseError, check_bind, choose_port,
                                          serve_openai, usable_api_keys)

KEY = "test-key-123"


@pytest.fixture(scope="module")
def endless_model(session_run_dir, tmp_path_factory):
    """The tiny architecture with random weights: it never writes its end token, so every answer runs to its
    max_tokens, and lengths, queues and cancellation are observable (the pretrained base stops after a sentence)."""
    from course_utils.tiny_model import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("serving") / "tiny-random", seed=0)


@pytest.fixture(scope="module")
def server(endless_model):
    with serve_openai(endless_model, backend="transformers", api_keys=[KEY], model_name="tiny") as server:
        yield server


@pytest.fixture(scope="module")
def dish():
    return Image.new("RGB", (320, 240), (180, 120, 40))


def post(server, payload=None, content=None, key=KEY, timeout=120):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(f"{server.base_url}/chat/completions", json=payload, content=content, headers=headers,
                      timeout=timeout)


def hello(max_tokens=8, **options) -> dict:
    """A question whose greedy answer runs to ``max_tokens`` on the endless model."""
    return {"model": "tiny", "messages": [{"role": "user", "content": "你好"}], "max_tokens": max_tokens,
            "temperature": 0, **options}


@contextmanager
def open_stream(base_url, payload, key=KEY):
    """A streamed request, left (closed) by the client when the block ends, however far it has read."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{base_url}/chat/completions", json={**payload, "stream": True},
                           headers=headers) as response:
            assert response.status_code == 200
            yield response.iter_lines()


def test_the_server_listens_on_loopback_only(server):
    assert server.host == LOOPBACK and server.running
    listening = {c.laddr for p in [psutil.Process(server.process.pid)] for c in p.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {(LOOPBACK, server.port)}


def test_openai_client_round_trip_plain_and_streamed(server, dish, endless_model):
    from transformers import AutoModel, AutoTokenizer

    client = server.client()
    assert [model.id for model in client.models.list().data] == ["tiny"]
    text = ask(client, "tiny", dish, "这是什么菜？", max_tokens=10)
    # the model card's chat in this process, on the image exactly as the server decoded it from the data URL
    model = AutoModel.from_pretrained(endless_model, trust_remote_code=True, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(endless_model, trust_remote_code=True)
    tiles = image_pixel_values(model, decode_data_url(image_data_url(dish)))
    assert text == model.chat(tokenizer, tiles, "这是什么菜？", dict(max_new_tokens=10, do_sample=False))
    chunks = list(client.chat.completions.create(model="tiny", messages=[user_message(dish, "这是什么菜？")],
                                                 max_tokens=10, temperature=0, stream=True))
    assert chunks[0].object == "chat.completion.chunk" and chunks[-1].choices[0].finish_reason == "length"
    assert "".join(ask_stream(client, "tiny", dish, "这是什么菜？", max_tokens=10)).strip() == text


def test_a_two_turn_conversation_and_text_only_questions(server, dish):
    client = server.client()
    first = ask(client, "tiny", dish, "这是什么菜？", max_tokens=8)
    messages = [user_message(dish, "这是什么菜？"), {"role": "assistant", "content": first},
                {"role": "user", "content": "它来自哪里？"}]
    response = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    assert isinstance(ask(client, "tiny", None, "你好", max_tokens=4), str)


def test_an_api_key_is_required_when_configured(server):
    response = post(server, {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}, key=None)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.base_url}/models", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize("payload, content, fragment", [
    (None, b"{not json", "JSON"),
    ({"model": "tiny"}, None, "messages"),
    ({"model": "tiny", "messages": []}, None, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, None, "temperature"),
    ({"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, None, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/dish.jpg"}}]}]}, None, "base64 data URL"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"no image").decode()}}
    ]}]}, None, "readable image"),
    ({"model": "tiny", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
     None, "system messages"),
    ({"model": "tiny", "messages": [{"role": "assistant", "content": "hi"}]}, None, "last message"),
])
def test_malformed_requests_get_openai_style_400s(server, payload, content, fragment):
    response = post(server, payload, content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"]


def test_an_unknown_model_is_a_404(server):
    response = post(server, {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_a_busy_port_is_reported_before_anything_starts(server, tiny_model_path):
    with pytest.raises(PortInUseError, match=f"port {server.port} on 127.0.0.1 is in use"):
        serve_openai(tiny_model_path, backend="transformers", port=server.port)
    assert choose_port(LOOPBACK, None) != server.port


def test_a_non_loopback_bind_needs_api_keys(tiny_model_path):
    with pytest.raises(ValueError, match="api_keys"):
        serve_openai(tiny_model_path, backend="transformers", host="0.0.0.0")
    with pytest.raises(ValueError, match="api_keys"):
        check_bind("my-laptop.local", None)
    check_bind("0.0.0.0", ["secret"])
    check_bind("::1", None)


def small_server(tmp_path, code: str) -> ManagedServer:
    port = choose_port(LOOPBACK, None)
    return ManagedServer([sys.executable, "-c", code, str(port)], LOOPBACK, port, "fake", None,
                         tmp_path / "server.log")


# a server that starts a child process, then answers /health
SERVER_WITH_CHILD = """
import http.server, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_stop_leaves_no_process_behind(tmp_path):
    server = small_server(tmp_path, SERVER_WITH_CHILD).start(timeout=60)
    family = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    assert len(family) == 2
    server.stop()
    assert not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in family)
    assert choose_port(LOOPBACK, server.port) == server.port  # free again for the next server


def test_a_server_that_dies_at_start_shows_its_log_tail(tmp_path):
    server = small_server(tmp_path, "print('CUDA out of memory while loading'); raise SystemExit(3)")
    with pytest.raises(RuntimeError, match="(?s)exit code 3.*CUDA out of memory while loading"):
        server.start(timeout=60)
    assert not server.running


def test_a_server_that_never_answers_times_out_with_its_log_tail(tmp_path):
    server = small_server(tmp_path, "import time; print('still loading weights', flush=True); time.sleep(600)")
    with pytest.raises(TimeoutError, match="(?s)within 3 s.*still loading weights"):
        server.start(timeout=3)
    assert server.process is None


# -- hostile clients (issue 22: each test names the row it covers) ----------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but holds almost no data: what a decompression bomb looks
    like before it is decoded (a real one would need gigabytes to build here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def image_request(png: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return hello() | {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "这是什么菜？"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def test_abandoned_streams_leave_the_server_answering(server):
    """Row 1: three streams left after their first piece; the next request is answered at once."""
    for _ in range(3):
        with open_stream(server.base_url, hello(400)) as lines:
            next(lines)
    response = post(server, hello(8), timeout=20)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["role"] == "assistant"


def test_a_crowd_behind_one_stream_is_served_while_health_answers(server):
    """Row 2: one stream (a thousand tokens: still being generated when the crowd arrives), 48 plain requests
    behind it (more than a thread pool's 40 workers), and /health and /v1/models answer meanwhile."""
    with open_stream(server.base_url, hello(1000)) as lines, ThreadPoolExecutor(48) as pool:
        next(lines)
        crowd = [pool.submit(post, server, hello(4), timeout=60) for _ in range(48)]
        time.sleep(1)  # the crowd is waiting now
        start = time.monotonic()
        assert httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=5).status_code == 200
        assert httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {KEY}"},
                         timeout=5).status_code == 200
        assert time.monotonic() - start < 5
        assert sum(1 for _ in lines) > 0  # the stream goes on to its end
        assert [future.result().status_code for future in crowd] == [200] * 48


@pytest.mark.parametrize("payload, fragment", [
    (image_request(png_header(20000, 20000)), "decompression bomb"),  # more than PIL's own bomb limit
    (image_request(png_header(10000, 10000)), f"at most {MAX_IMAGE_PIXELS:,} pixels"),
    (hello(10**9), "session length is 8192: at most"),
    (hello(10**9, stream=True), "session length is 8192: at most"),  # refused before the stream starts
    (hello(None) | {"messages": [{"role": "user", "content": "菜 " * 1_000_000}]}, "session length is 8192"),
])
def test_inputs_too_large_are_400s_before_any_work(server, payload, fragment):
    """Rows 3 and 5: huge images (refused from their header, never decoded), and prompts or max_tokens that do
    not fit the session, streamed or not."""
    response = post(server, payload, timeout=60)
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]


def test_a_missing_max_tokens_becomes_one_that_fits(server):
    """Row 4: no answer runs on unbounded: the default is cut to the room the session has left, and an explicit
    max_tokens must fit."""
    assert fitting_max_tokens(28, None, 8192) == DEFAULT_MAX_TOKENS
    assert fitting_max_tokens(8150, None, 8192) == 42
    assert fitting_max_tokens(28, 8164, 8192) == 8164
    for prompt_tokens, asked in ((28, 8165), (8192, None)):
        with pytest.raises(RequestError, match="session length is 8192"):
            fitting_max_tokens(prompt_tokens, asked, 8192)
    body = post(server, hello(None)).json()
    assert body["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS and body["choices"][0]["finish_reason"] == "length"


def test_concurrent_huge_images_leave_memory_alone(server):
    """Row 5: 8 concurrent 10000x10000 images are refused without decoding: the server's memory stays put."""
    rss = psutil.Process(server.process.pid).memory_info().rss
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(server, image_request(png_header(10000, 10000))), range(8)))
    assert [r.status_code for r in responses] == [400] * 8
    assert psutil.Process(server.process.pid).memory_info().rss - rss < 200 * 2**20


def test_a_body_over_the_byte_limit_and_a_lone_surrogate_are_400s(server):
    """Row 3: the byte limit is checked before the body is parsed; ``\\ud800`` is not text."""
    too_big = post(server, content=b"{" + b" " * MAX_REQUEST_BYTES + b"}")
    assert too_big.status_code == 400 and "bytes per request" in too_big.json()["error"]["message"]
    surrogate = post(server, content=json.dumps(hello(4), ensure_ascii=False).replace("你好", "\\ud800").encode())
    assert surrogate.status_code == 400 and "lone surrogate" in surrogate.json()["error"]["message"]
    assert surrogate.json()["error"]["param"] == "messages.0.content"


def test_an_empty_key_is_no_key(tiny_model_path):
    """Row 6: "" or [""] is no key, so a server on the network with only an empty key is refused."""
    assert usable_api_keys("") is None and usable_api_keys(["", " "]) is None and usable_api_keys("k") == ["k"]
    for empty in ("", [""]):
        with pytest.raises(ValueError, match="api_keys"):
            serve_openai(tiny_model_path, backend="transformers", host="0.0.0.0", api_keys=empty)


@pytest.mark.parametrize("keys", [[], ["--api-keys", ""]])
def test_the_module_entry_point_enforces_the_binding_rule(tiny_model_path, keys):
    """Row 6: started by hand on the network without a key, the server refuses to start (before loading)."""
    done = subprocess.run([sys.executable, "-m", "course_utils.engines.openai_app", str(tiny_model_path),
                           "--server-name", "0.0.0.0", *keys], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "api_keys" in done.stderr


def test_the_key_stays_off_the_command_line_and_the_docs_are_off(server):
    """Row 6: ``ps`` does not show the key; /docs, /redoc, /openapi.json do not exist, key or not."""
    assert not any(KEY in part for part in psutil.Process(server.process.pid).cmdline())
    root = server.base_url.removesuffix("/v1")
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = httpx.get(root + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_usage_and_finish_reason_length(server):
    """Row 7: ``usage`` counts the tokens; an answer cut by max_tokens ends with "length"."""
    body = post(server, hello(6, temperature=0)).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 6
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 6 and body["usage"]["prompt_tokens"] > 2


def test_stop_strings_are_honoured_streamed_or_not(server):
    """Row 7: the answer ends before the first stop string, with "stop"."""
    full = post(server, hello(30, temperature=0)).json()["choices"][0]["message"]["content"]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip()
    cut = post(server, hello(30, temperature=0, stop=[stop, "never there"])).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[:full.index(stop)].strip()
    chunks = list(server.client().chat.completions.create(**hello(30, temperature=0, stop=stop), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == cut["message"]["content"]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_options_include_usage(server):
    """Row 7: the last chunk before [DONE] carries the usage; without the option no chunk does."""
    client = server.client()
    chunks = list(client.chat.completions.create(**hello(5, temperature=0), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"
    plain = list(client.chat.completions.create(**hello(5, temperature=0), stream=True))
    assert all(chunk.usage is None for chunk in plain)


@pytest.mark.parametrize("extra, named", [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function"}], "logprobs": True}, "tools, logprobs"),
    ({"presence_penalty": 0.5, "frequency_penalty": 0.5}, "presence_penalty, frequency_penalty"),
])
def test_parameters_not_implemented_are_refused_by_name(server, extra, named):
    """Row 7: never silently ignored."""
    response = post(server, hello(4) | extra)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"{named}: not implemented by this server")


@pytest.mark.parametrize("value", ["yes", 1])
def test_types_are_strict(server, value):
    """Row 7: ``stream: "yes"`` or ``1`` is not true."""
    response = post(server, hello(4, stream=value))
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream"


def test_every_error_is_in_openais_shape(server):
    """Row 7: unknown routes, wrong methods and a body that is not UTF-8 are OpenAI errors, not FastAPI's."""
    root = server.base_url.removesuffix("/v1")
    not_found = httpx.get(f"{root}/v1/completions", timeout=10)
    wrong_method = httpx.get(f"{server.base_url}/chat/completions", timeout=10)
    not_utf8 = post(server, content=b'{"model": "tiny", "messages": "\xff\xfe"}')
    for response, status in ((not_found, 404), (wrong_method, 405), (not_utf8, 400)):
        assert response.status_code == status and set(response.json()) == {"error"}
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# -- the queue and cancellation, on an app served in this process (limits of its own, the engine observable) --

@pytest.fixture(scope="module")
def engine(endless_model):
    engine = load_engine(endless_model, backend="transformers")
    yield engine
    engine.close()


@contextmanager
def app_server(engine, **limits):
    """``create_app`` served by uvicorn in a thread on 127.0.0.1; its base URL."""
    port = choose_port(LOOPBACK, None)
    server = uvicorn.Server(uvicorn.Config(create_app(engine, "tiny", **limits), host=LOOPBACK, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)
    try:
        yield f"http://{LOOPBACK}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_full_queue_gets_a_429_and_a_long_wait_a_503_both_with_retry_after(engine):
    """Row 2: back-pressure: a waiting request is served, or told when to retry; none hangs."""
    with app_server(engine, max_waiting=2, max_wait_seconds=2) as base_url:
        with open_stream(base_url, hello(8000), key=None) as lines, ThreadPoolExecutor(4) as pool:
            next(lines)  # the engine is busy with this stream for several seconds
            crowd = [pool.submit(httpx.post, f"{base_url}/chat/completions", json=hello(4), timeout=30)
                     for _ in range(4)]
            responses = [future.result() for future in crowd]
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [429, 429, 503, 503]
        for response in responses:
            assert int(response.headers["Retry-After"]) >= 1 and set(response.json()) == {"error"}
        assert httpx.post(f"{base_url}/chat/completions", json=hello(4), timeout=30).status_code == 200


def test_a_client_that_hangs_up_cancels_its_generation(engine):
    """Row 4: a 6000-token answer whose client leaves after half a second stops there: the next request does not
    wait for it (alone, it takes several seconds)."""
    with app_server(engine) as base_url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base_url}/chat/completions", json=hello(6000), timeout=0.5)
        start = time.monotonic()
        assert httpx.post(f"{base_url}/chat/completions", json=hello(4), timeout=30).status_code == 200
        assert time.monotonic() - start < 2.5


def test_an_engine_failure_is_a_500_and_the_engine_loop_goes_on(engine):
    """A broken request must not stop the one thread that serves every request."""
    class FailsOnce:
        failed = False

        def __getattr__(self, name):
            return getattr(engine, name)

        def turn(self, *args, **kwargs):
            if not self.failed:
                self.failed = True
                raise RuntimeError("out of memory")
            return engine.turn(*args, **kwargs)

    with app_server(FailsOnce()) as base_url:
        failed = httpx.post(f"{base_url}/chat/completions", json=hello(4), timeout=30)
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "server_error"
        assert "RuntimeError: out of memory" in failed.json()["error"]["message"]
        assert httpx.post(f"{base_url}/chat/completions", json=hello(4), timeout=30).status_code == 200
