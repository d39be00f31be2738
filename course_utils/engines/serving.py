"""An OpenAI-compatible server as a managed subprocess: LMDeploy's ``lmdeploy serve api_server`` on a GPU, the
course's FastAPI app over the transformers engine (:mod:`.openai_app`) anywhere else. The same life cycle for both:

* bound to 127.0.0.1 unless asked otherwise, and then only with API keys (anyone on the network could use it); an
  empty key is no key, and the keys reach the server through its environment, never its command line (which
  every user of the machine can read with ``ps``);
* a free port chosen when none is given, a busy port reported before anything starts;
* started, then polled on ``/health`` until it answers; a server that stops or times out raises an error that
  shows the end of its log;
* stopped with its whole process group (SIGTERM, then SIGKILL): no process outlives it.

    with serve_openai(model_path) as server:
        client = server.client()          # an openai.OpenAI pointed at it
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from ..paths import run_dir

LOOPBACK = "127.0.0.1"
ANY_ADDRESS = ("0.0.0.0", "::", "")
API_KEYS_VARIABLE = "COURSE_SERVER_API_KEYS"
# ``python -c`` this, then the server's module and arguments: it appends the keys from the environment to the
# server's own sys.argv (its --api-keys flag), so the keys never show in the process's command line.
KEYS_FROM_ENVIRONMENT = (
    "import json, os, runpy, sys; "
    f"sys.argv += ['--api-keys', *json.loads(os.environ.pop({API_KEYS_VARIABLE!r}))]; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


class PortInUseError(OSError):
    """The port asked for is taken (by another server, often an earlier one still running)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to a public address
        return False


def usable_api_keys(api_keys: list[str] | str | None) -> list[str] | None:
    """The keys a server accepts: a string is one key, and an empty or blank key is none (a client that sends
    ``Authorization: Bearer`` with nothing after it must not get in); None when no key is left."""
    keys = [api_keys] if isinstance(api_keys, str) else list(api_keys or [])
    return [key for key in keys if key.strip()] or None


def check_bind(host: str, api_keys: list[str] | None) -> None:
    """A server on anything but loopback must require API keys; ValueError naming the fix otherwise."""
    if not is_loopback(host) and not api_keys:
        raise ValueError(f"host={host!r} makes the model reachable from the network: pass api_keys=['a long "
                         "secret', ...] so that only clients with a key can use it, or keep the default 127.0.0.1")


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as servers do: connections of a stopped server (TIME_WAIT) do not block the port, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, port: int | None) -> int:
    """``port`` if it is free (PortInUseError if not); a free port chosen by the system when ``port`` is None."""
    if port is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            return probe.getsockname()[1]
    if not port_is_free(host, port):
        raise PortInUseError(f"port {port} on {host} is in use (an earlier server still running?): stop it, pick "
                             "another port, or pass port=None to let the course choose a free one")
    return port


def lmdeploy_command(model_path, host: str, port: int, *, model_name: str, engine: str = "lmdeploy",
                     dtype: str = "auto", session_len: int | None = None,
                     cache_max_entry_count: float | None = None, max_batch_size: int | None = None, tp: int = 1,
                     vision_batch_size: int | None = None, log_level: str = "WARNING") -> list[str]:
    """``lmdeploy serve api_server`` with the course's knobs (engine "lmdeploy": the PyTorch engine); the API keys
    are added by :class:`ManagedServer`."""
    backend = {"lmdeploy": "pytorch", "turbomind": "turbomind"}[engine]
    command = [sys.executable, "-m", "lmdeploy", "serve", "api_server", str(model_path), "--backend", backend,
               "--server-name", host, "--server-port", str(port), "--model-name", model_name, "--dtype", dtype,
               "--tp", str(tp), "--log-level", log_level]
    for flag, value in (("--session-len", session_len), ("--cache-max-entry-count", cache_max_entry_count),
                        ("--max-batch-size", max_batch_size), ("--vision-max-batch-size", vision_batch_size)):
        if value is not None:
            command += [flag, str(value)]
    return command


def course_command(model_path, host: str, port: int, *, model_name: str, dtype: str = "auto",
                   max_dynamic_patch: int | None = None, session_len: int | None = None,
                   max_batch_size: int | None = None) -> list[str]:
    """The course's own server (:mod:`.openai_app`), with the same flags as LMDeploy's."""
    command = [sys.executable, "-m", "course_utils.engines.openai_app", str(model_path), "--server-name", host,
               "--server-port", str(port), "--model-name", model_name, "--dtype", dtype]
    for flag, value in (("--max-dynamic-patch", max_dynamic_patch), ("--session-len", session_len),
                        ("--max-batch-size", max_batch_size)):
        if value is not None:
            command += [flag, str(value)]
    return command


class ManagedServer:
    """A server subprocess in its own process group, with its log in a file; a context manager.

    With ``api_keys``, ``command`` (``python -m MODULE ARGS``) runs as ``python -c KEYS_FROM_ENVIRONMENT MODULE ARGS``
    with the keys in the environment variable ``API_KEYS_VARIABLE``."""

    def __init__(self, command: list[str], host: str, port: int, model_name: str, api_keys: list[str] | None,
                 log_path: Path):
        self.command, self.host, self.port, self.model_name = command, host, port, model_name
        self.api_keys = api_keys
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``) a client on this machine uses."""
        host = LOOPBACK if self.host in ANY_ADDRESS else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/v1"

    def start(self, timeout: float = 300.0) -> "ManagedServer":
        """Start the server and wait until ``/health`` answers (at most ``timeout`` seconds)."""
        from ..course_run import kernel_environment

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command, environment = self.command, {**os.environ, **kernel_environment(None)}
        if self.api_keys:
            python, flag, module, *arguments = command
            if flag != "-m":
                raise ValueError(f"a server with API keys is started as python -m MODULE ...: got {command[:3]}")
            command = [python, "-c", KEYS_FROM_ENVIRONMENT, module, *arguments]
            environment[API_KEYS_VARIABLE] = json.dumps(self.api_keys)
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the file descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=environment)
        atexit.register(self.stop)  # a kernel that exits without stop() leaves no server behind
        try:
            self.wait_until_ready(timeout)
        except BaseException:  # a failed start, or an interrupt while waiting, leaves nothing running
            self.stop()
            raise
        return self

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = self.base_url.removesuffix("/v1") + "/health"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: no HTTP proxy
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"the server stopped (exit code {code}) before it was ready. The end of its log "
                                   f"({self.log_path}):\n{self.log_tail()}")
            try:
                with direct.open(health, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer {health} within {timeout:.0f} s (a large model may "
                                   f"need a longer timeout). The end of its log ({self.log_path}):\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        if not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started (SIGTERM to its group, SIGKILL after ``timeout`` s)."""
        import psutil

        atexit.unregister(self.stop)
        if self.process is None:
            return
        try:
            family = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        _, alive = psutil.wait_procs(family, timeout=5)  # children that left the group or outlived the parent
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=5)
        self.process = None

    def _signal_group(self, signal_number: int) -> None:
        try:
            os.killpg(self.process.pid, signal_number)  # start_new_session: the group id is the server's pid
        except ProcessLookupError:
            pass

    def client(self, timeout: float = 600.0):
        """An ``openai.OpenAI`` client for this server (with its first API key, if it has any)."""
        import httpx
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=(self.api_keys or ["no-key"])[0], timeout=timeout,
                      http_client=httpx.Client(trust_env=False, timeout=timeout))  # local: no HTTP proxy

    def __enter__(self) -> "ManagedServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running, pid {self.process.pid}" if self.running else "stopped"
        return f"ManagedServer({self.model_name!r} at {self.base_url}, {state})"


def serve_openai(model_path, backend: str = "auto", *, host: str = LOOPBACK, port: int | None = None,
                 api_keys: list[str] | str | None = None, model_name: str | None = None,
                 startup_timeout: float = 300.0, dtype: str = "auto", max_dynamic_patch: int | None = None,
                 session_len: int | None = None, cache_max_entry_count: float | None = None,
                 max_batch_size: int | None = None, tp: int = 1, vision_batch_size: int | None = None) -> ManagedServer:
    """Start an OpenAI-compatible server for ``model_path`` and return it once it answers.

    ``backend`` as in ``load_engine``: LMDeploy's ``api_server`` for "lmdeploy"/"turbomind", the course's FastAPI
    app over the transformers engine for "transformers". ``api_keys`` (required for a non-loopback ``host``):
    bearer tokens the server accepts.
    """
    from .interface import choose_backend, warn_lmdeploy_only

    api_keys = usable_api_keys(api_keys)
    check_bind(host, api_keys)
    backend = choose_backend()[0] if backend == "auto" else backend
    port = choose_port(host, port)
    model_name = model_name or Path(model_path).name
    if backend == "transformers":
        if tp != 1:
            raise ValueError("the course's server runs the transformers engine on one device (tp=1)")
        warn_lmdeploy_only("the course's server", cache_max_entry_count=cache_max_entry_count,
                           vision_batch_size=vision_batch_size)
        command = course_command(model_path, host, port, model_name=model_name, dtype=dtype,
                                 max_dynamic_patch=max_dynamic_patch, session_len=session_len,
                                 max_batch_size=max_batch_size)
    elif backend in ("lmdeploy", "turbomind"):
        from .lmdeploy_engine import check_chat_template

        check_chat_template(model_path)
        if max_dynamic_patch is not None:
            raise ValueError("LMDeploy's api_server takes max_dynamic_patch per request: put it next to the url in "
                             "the image_url part (client.user_message(..., max_dynamic_patch=N) does)")
        command = lmdeploy_command(model_path, host, port, model_name=model_name, engine=backend,
                                   dtype=dtype, session_len=session_len, cache_max_entry_count=cache_max_entry_count,
                                   max_batch_size=max_batch_size, tp=tp, vision_batch_size=vision_batch_size)
    else:
        raise ValueError(f"backend must be auto, transformers, lmdeploy or turbomind (got {backend!r})")
    log_path = run_dir() / "serving" / f"{model_name}-{port}.log"
    return ManagedServer(command, host, port, model_name, api_keys, log_path).start(startup_timeout)
