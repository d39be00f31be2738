"""How does an OpenAI-compatible server hold under load and under clients that misbehave?

Cases, each request with a client timeout (an unanswered request is counted, never waited for forever):
  ``concurrency``          1, 4, 16 and 64 plain requests at once: answers, errors, timeouts, requests/s, latency;
  ``streams``              16 streams at once: completed streams, time to the first piece;
  ``abandoned_streams``    3 streams of 400 tokens left after their first piece, then one short request: its latency;
  ``crowd_behind_stream``  one stream of 1000 tokens while 48 plain requests wait behind it: ``/health`` and
                           ``/v1/models`` latency meanwhile, and what became of the 48;
  ``disconnect``           a long answer whose client hangs up after 0.5 s, then one short request: its latency
                           (short if the server stopped the long answer, long if it ran on).

Without ``--base-url`` the script starts the course's own server (``serve_openai``, transformers engine, CPU) on the
embedded tiny model on 127.0.0.1, and also reports the server's resident memory. With ``--base-url`` it loads any
running server, e.g. LMDeploy's on a GPU:

    python benchmarks/server_load.py --out benchmarks/results/server_load.json
    lmdeploy serve api_server MODEL_DIR --server-port 23333 &
    python benchmarks/server_load.py --base-url http://127.0.0.1:23333/v1 --model MODEL_NAME --out lmdeploy.json \\
        --describe "lmdeploy serve api_server, PyTorch engine, H100"
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

CONCURRENCY = (1, 4, 16, 64)
QUESTION = "你好，请介绍一下这道菜。"


class Client:
    """Requests to one server, each with ``timeout`` seconds to answer; no HTTP proxy (a local server)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float):
        self.base_url, self.model, self.timeout = base_url.rstrip("/"), model, timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def payload(self, max_tokens: int, **options) -> dict:
        return {"model": self.model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens,
                "temperature": 0, **options}

    def chat(self, max_tokens: int, timeout: float | None = None) -> dict:
        """One plain request: its status ("timeout" when unanswered) and seconds."""
        start = time.perf_counter()
        try:
            response = httpx.post(f"{self.base_url}/chat/completions", json=self.payload(max_tokens),
                                  headers=self.headers, timeout=timeout or self.timeout, trust_env=False)
            status = response.status_code
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.TransportError as error:
            status = f"connection error: {type(error).__name__}"
        return {"status": status, "seconds": time.perf_counter() - start}

    def get(self, path: str) -> dict:
        start = time.perf_counter()
        root = self.base_url.removesuffix("/v1")
        try:
            status = httpx.get(root + path, headers=self.headers, timeout=self.timeout, trust_env=False).status_code
        except httpx.TimeoutException:
            status = "timeout"
        return {"status": status, "seconds": time.perf_counter() - start}

    def stream(self, max_tokens: int, pieces: int | None = None) -> dict:
        """One stream, read to its end or left after ``pieces`` pieces: status, pieces read, first piece's and
        total seconds."""
        start, first, read = time.perf_counter(), None, 0
        try:
            with httpx.Client(timeout=self.timeout, trust_env=False) as client:
                with client.stream("POST", f"{self.base_url}/chat/completions", headers=self.headers,
                                   json=self.payload(max_tokens, stream=True)) as response:
                    status = response.status_code
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        first = first or time.perf_counter() - start
                        read += 1
                        if pieces is not None and read >= pieces:
                            break  # leaving the block closes the connection: the client is gone
        except httpx.TimeoutException:
            status = "timeout"
        return {"status": status, "pieces": read, "first_piece_seconds": first,
                "seconds": time.perf_counter() - start}


def summary(results: list[dict]) -> dict:
    """Counts per status and latency percentiles of the answered (200) requests."""
    statuses: dict[str, int] = {}
    for result in results:
        statuses[str(result["status"])] = statuses.get(str(result["status"]), 0) + 1
    answered = sorted(result["seconds"] for result in results if result["status"] == 200)
    figures = {"requests": len(results), "statuses": statuses, "timeouts": statuses.get("timeout", 0)}
    if answered:
        figures.update(p50_seconds=round(statistics.median(answered), 3),
                       p95_seconds=round(answered[min(len(answered) - 1, int(0.95 * len(answered)))], 3),
                       max_seconds=round(answered[-1], 3))
    return figures


def concurrency_case(client: Client) -> list[dict]:
    rows = []
    for count in CONCURRENCY:
        start = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda _: client.chat(16), range(count)))
        seconds = time.perf_counter() - start
        rows.append({"concurrency": count, **summary(results), "wall_seconds": round(seconds, 3),
                     "requests_per_second": round(count / seconds, 2)})
    return rows


def streams_case(client: Client, count: int = 16) -> dict:
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda _: client.stream(32), range(count)))
    firsts = sorted(r["first_piece_seconds"] for r in results if r["first_piece_seconds"] is not None)
    return {**summary(results), "completed": sum(r["status"] == 200 and r["pieces"] > 1 for r in results),
            "first_piece_p50_seconds": round(statistics.median(firsts), 3) if firsts else None}


def abandoned_streams_case(client: Client, count: int = 3) -> dict:
    left = [client.stream(400, pieces=1) for _ in range(count)]
    after = client.chat(8)
    return {"abandoned": count, "abandoned_statuses": sorted({str(r["status"]) for r in left}),
            "next_request_status": after["status"], "next_request_seconds": round(after["seconds"], 3)}


def crowd_behind_stream_case(client: Client, crowd: int = 48) -> dict:
    with ThreadPoolExecutor(crowd + 1) as pool:
        stream = pool.submit(client.stream, 1000)  # still being generated when the crowd arrives
        time.sleep(0.5)  # the stream has started
        waiting = [pool.submit(client.chat, 4) for _ in range(crowd)]
        time.sleep(1.0)  # the crowd is queued
        health, models = client.get("/health"), client.get("/v1/models")
        results = [future.result() for future in waiting]
        streamed = stream.result()
    return {"crowd": crowd, **summary(results), "stream_status": streamed["status"],
            "stream_pieces": streamed["pieces"],
            "health_status": health["status"], "health_seconds": round(health["seconds"], 3),
            "models_status": models["status"], "models_seconds": round(models["seconds"], 3)}


def disconnect_case(client: Client, long_tokens: int) -> dict:
    alone = client.chat(long_tokens)
    client.chat(long_tokens, timeout=0.5)  # the client gives up: its timeout is the point here
    after = client.chat(8)
    return {"long_tokens": long_tokens, "long_request_alone_seconds": round(alone["seconds"], 3),
            "left_after_seconds": 0.5, "next_request_status": after["status"],
            "next_request_seconds": round(after["seconds"], 3)}


def run_cases(client: Client, long_tokens: int, server_process=None) -> dict:
    def rss_mb():
        return round(server_process.memory_info().rss / 2**20) if server_process else None

    cases, memory = {}, {"start_mb": rss_mb()}
    for name, case in (("concurrency", lambda: concurrency_case(client)), ("streams", lambda: streams_case(client)),
                       ("abandoned_streams", lambda: abandoned_streams_case(client)),
                       ("crowd_behind_stream", lambda: crowd_behind_stream_case(client)),
                       ("disconnect", lambda: disconnect_case(client, long_tokens))):
        start = time.perf_counter()
        cases[name] = case()
        print(f"{name} ({time.perf_counter() - start:.1f} s): {json.dumps(cases[name], ensure_ascii=False)}",
              flush=True)
    memory["end_mb"] = rss_mb()
    return {"cases": cases, "server_memory": memory if server_process else None}


def unanswered(cases: dict) -> int:
    """Requests that got no answer within the client timeout, over every case."""
    def count(value) -> int:
        if isinstance(value, dict):
            return sum(count(v) for v in value.values()) + (value.get("timeouts", 0) if "requests" in value else 0)
        if isinstance(value, list):
            return sum(count(v) for v in value)
        return int(value == "timeout")

    return count(cases)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="an OpenAI base URL (…/v1) of a running server; default: start the "
                                           "course's server on the tiny model")
    parser.add_argument("--model", help="the model name that server serves (with --base-url)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take (default 120)")
    parser.add_argument("--long-tokens", type=int, default=4000, help="max_tokens of the disconnect case's answer")
    parser.add_argument("--describe", default=None,
                        help="with --base-url: what that server is (engine, model, machine), kept in the results")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if bool(args.base_url) != bool(args.model):
        parser.error("--base-url and --model go together")
    setup = {"python": platform.python_version(), "machine": platform.machine(), "timeout_seconds": args.timeout}
    if args.base_url:
        server, base_url, model = nullcontext(), args.base_url, args.model
        setup.update(server=args.describe or f"running server at {args.base_url}", model=model)
    else:
        import os

        from course_utils.engines.serving import serve_openai
        from course_utils.tiny_model import ensure_tiny_model

        server = serve_openai(ensure_tiny_model(), backend="transformers", model_name="tiny")
        base_url, model = server.base_url, "tiny"
        setup.update(server="the course's server (serve_openai, transformers engine, CPU)", model="tiny embedded "
                     "model", cpus=os.cpu_count())
    with server:
        import psutil

        process = psutil.Process(server.process.pid) if not args.base_url else None
        start = time.perf_counter()
        report = run_cases(Client(base_url, model, args.api_key, args.timeout), args.long_tokens, process)
    report = {"setup": setup, **report, "unanswered_requests": unanswered(report["cases"]),
              "seconds": round(time.perf_counter() - start, 1)}
    print(f"requests without an answer within {args.timeout:.0f} s: {report['unanswered_requests']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if report["unanswered_requests"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
