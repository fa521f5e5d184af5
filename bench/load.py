"""Benchmark: the API server under concurrent streaming clients, over real HTTP (issue 14 speed, issue 15 overload).

    python -m bench.load                                    # the shipped mini, 1 / 20 / 50 clients x 3 requests
    python -m bench.load --clients 1,20,50 --requests 3 --max-tokens 64 --server-arg=--max-waiting=8

Starts the real server (`python -m server`, a subprocess on a free port, the model of --model), then for each
client count runs that many clients at once, each its own official `openai` client (default retries: 2, honouring
the server's Retry-After) sending --requests streaming image questions one after another. Per level it prints:
answered (stream ended with a finish reason and [DONE]), refused (503 after the client's retries), lost (any other
error, or no answer within --timeout), the 503 responses the clients saw (retried ones included) and their
Retry-After values, p50 / p95 latency of answered requests, and throughput (completion tokens/s) as a ratio to the
1-client level (run first, whether or not it is listed). Load on the machine matters: the header prints it.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chat_turn import IMAGE, pct  # noqa: E402

MINI = ROOT / "checkpoints" / "remoteglm-mini"
QUESTION = "这张遥感图像展现了什么场景？"


@dataclass
class Level:
    clients: int
    answered: int = 0
    refused: int = 0
    lost: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    status_503: int = 0
    retry_after: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str], data_dir: str) -> subprocess.Popen:
    env = dict(os.environ, REMOTEGLM_DATA_DIR=data_dir)
    env.pop("REMOTEGLM_API_KEY", None)  # loopback, no key: the bench measures serving, not auth
    proc = subprocess.Popen([sys.executable, "-m", "server", "--model", model, "--port", str(port), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer /health within 180 s")


def run_level(base_url: str, clients: int, requests: int, max_tokens: int, timeout: float, image_url: str) -> Level:
    level = Level(clients)
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                             {"type": "text", "text": QUESTION}]}]

    def saw(response: httpx.Response) -> None:  # every HTTP response, retried attempts included
        if response.status_code == 503:
            with lock:
                level.status_503 += 1
                level.retry_after[response.headers.get("retry-after", "none")] += 1

    def client_session() -> None:
        http = httpx.Client(timeout=timeout, event_hooks={"response": [saw]})
        client = openai.OpenAI(base_url=base_url, api_key="EMPTY", http_client=http)  # default retries (2)
        barrier.wait()
        for _ in range(requests):
            started = time.perf_counter()
            try:
                finish, tokens = None, 0
                for chunk in client.chat.completions.create(
                        model="remoteglm", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
                        stream_options={"include_usage": True}):
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                    if chunk.usage:
                        tokens = chunk.usage.completion_tokens
                took = time.perf_counter() - started
                with lock:
                    if finish is None or tokens == 0:
                        level.lost.append(f"stream ended without a finish reason or usage ({finish}, {tokens})")
                    else:
                        level.answered += 1
                        level.latencies.append(took)
                        level.tokens += tokens
            except openai.APIStatusError as exc:
                with lock:
                    if exc.status_code == 503:
                        level.refused += 1
                    else:
                        level.lost.append(f"HTTP {exc.status_code}: {exc.message[:200]}")
            except Exception as exc:  # noqa: BLE001 - a timeout (hang), a broken stream...: counted as lost
                with lock:
                    level.lost.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        http.close()

    threads = [threading.Thread(target=client_session) for _ in range(clients)]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    level.wall = time.perf_counter() - started
    return level


def report(level: Level, base: Level | None, requests: int) -> str:
    lat = level.latencies or [0.0]
    ratio = f"{level.rate / base.rate:5.2f}" if base and base.rate else "  -  "
    after = ",".join(f"{k}:{v}" for k, v in sorted(level.retry_after.items())) or "-"
    return (f"{level.clients:3d} clients x {requests}   answered {level.answered:3d}   "
            f"refused (503) {level.refused:3d}   lost {len(level.lost):2d}   503 responses seen {level.status_503:3d} (Retry-After {after})   "
            f"latency p50 {statistics.median(lat):5.2f} s p95 {pct(lat, 0.95):5.2f} s   "
            f"throughput {level.rate:7.1f} tokens/s   ratio to 1 client {ratio}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(MINI), help="model directory (default: the shipped mini)")
    parser.add_argument("--clients", default="1,20,50", help="comma-separated concurrent client counts")
    parser.add_argument("--requests", type=int, default=3, help="streaming requests per client, one after another")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds without an answer that count as lost")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for `python -m server` (repeatable), e.g. --server-arg=--max-waiting=8")
    args = parser.parse_args(argv)
    import tempfile

    image_url = "data:image/jpeg;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    port = _free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        print(f"model: {args.model}  server flags: {args.server_arg or '-'}  max tokens: {args.max_tokens}  "
              f"cpus: {os.cpu_count()}  load average (1 min) at start: {os.getloadavg()[0]:.2f}", flush=True)
        proc = start_server(args.model, port, args.server_arg, data_dir)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            run_level(base_url, 1, 1, args.max_tokens, args.timeout, image_url)  # warm-up (first image encode)
            counts = [int(n) for n in args.clients.split(",")]
            base = None
            for n in ([1] if 1 not in counts else []) + counts:
                level = run_level(base_url, n, args.requests, args.max_tokens, args.timeout, image_url)
                if n == 1 and base is None:
                    base = level
                print(report(level, base, args.requests) + f"   (load {os.getloadavg()[0]:.2f})", flush=True)
                for reason, count in Counter(level.lost).most_common(3):
                    print(f"      lost x{count}: {reason}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
