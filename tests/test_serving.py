"""OpenAI-compatible serving on the CPU: the course's server as a managed subprocess, a real ``openai`` client
round trip (plain and streamed), OpenAI-style errors for bad requests, API keys, ports and a clean stop."""

import base64
import sys

import httpx
import psutil
import pytest
from PIL import Image

from course_utils.engines import GenerationSettings, load_engine
from course_utils.engines.client import ask, ask_stream, image_data_url, user_message
from course_utils.engines.openai_app import decode_data_url
from course_utils.engines.serving import (LOOPBACK, ManagedServer, PortInUseError, check_bind, choose_port,
                                          serve_openai)

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tiny_model_path):
    with serve_openai(tiny_model_path, backend="transformers", api_keys=[KEY], model_name="tiny") as server:
        yield server


@pytest.fixture(scope="module")
def dish():
    return Image.new("RGB", (320, 240), (180, 120, 40))


def post(server, payload=None, content=None, key=KEY):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(f"{server.base_url}/chat/completions", json=payload, content=content, headers=headers,
                      timeout=120)


def test_the_server_listens_on_loopback_only(server):
    assert server.host == LOOPBACK and server.running
    listening = {c.laddr for p in [psutil.Process(server.process.pid)] for c in p.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {(LOOPBACK, server.port)}


def test_openai_client_round_trip_plain_and_streamed(server, dish, tiny_model_path):
    client = server.client()
    assert [model.id for model in client.models.list().data] == ["tiny"]
    text = ask(client, "tiny", dish, "这是什么菜？", max_tokens=10)
    # the same question in-process, on the image exactly as the server decoded it from the data URL
    engine = load_engine(tiny_model_path, backend="transformers")
    try:
        expected = engine.answer(decode_data_url(image_data_url(dish)), "这是什么菜？", GenerationSettings(10))
    finally:
        engine.close()
    assert text == expected.text
    chunks = list(client.chat.completions.create(model="tiny", messages=[user_message(dish, "这是什么菜？")],
                                                 max_tokens=10, temperature=0, stream=True))
    assert chunks[0].object == "chat.completion.chunk" and chunks[-1].choices[0].finish_reason == "stop"
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
