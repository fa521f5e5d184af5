"""Memory of the API server over a bad-input / large-input run (issue 15 item 6): RSS at start, peak, after the
run, and idle 10 s later, with glibc's free-memory trim after large decodes on and off.

    python -m bench.memory [--model checkpoints/remoteglm-mini]

The run: 4 requests with an 81-megapixel PNG (under the 100 MP limit: decoded, then downscaled), a 100 000-character
prompt (400), a 50 MB body (413 / 422), 10 requests with a 512 px image. Prints each figure in MB and the idle
figure's ratio to the start.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def status_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def png(width: int, height: int, smooth: bool) -> bytes:
    if smooth:  # a gradient: a tiny file that decodes to width x height x 3 bytes
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
        pixels = ((x + y + np.zeros((1, 1, 3), np.float32)) / 2).astype(np.uint8)
    else:
        pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def request(url: str, image: bytes | None = None, text: str = "这张遥感图像展现了什么场景？") -> int:
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image_url",
                           "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}})
    body = {"model": "remoteglm", "messages": [{"role": "user", "content": content}], "max_tokens": 16}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).status_code


def run(model: str, trim: bool, big_side: int = 9000, idle_s: float = 10.0) -> dict[str, float]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "REMOTEGLM_MALLOC_TRIM": "1" if trim else "0"}
    server = subprocess.Popen([sys.executable, "-m", "server", "--model", model, "--port", str(port),
                               "--max-new-tokens", "16"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        start = status_mb(server.pid)["VmRSS"]
        big, small = png(big_side, big_side, smooth=True), png(512, 512, smooth=False)
        codes = [request(url, big) for _ in range(4)]
        codes.append(request(url, text="很长" * 50_000))
        codes.append(httpx.post(f"{url}/v1/chat/completions", content=b'{"messages": [' + b" " * 50_000_000 + b"]}",
                                headers={"content-type": "application/json"}, timeout=300).status_code)
        codes += [request(url, small) for _ in range(10)]
        after = status_mb(server.pid)
        time.sleep(idle_s)
        idle = status_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    print(f"  status codes: {codes}")
    return {"start": start, "peak": idle["VmHWM"], "after": after["VmRSS"], "idle": idle["VmRSS"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "remoteglm-mini"))
    ap.add_argument("--big-side", type=int, default=9000, help="side in px of the large PNG (9000: 81 megapixels)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before the last RSS reading")
    ap.add_argument("--trim", choices=("both", "off", "on"), default="both", help="which of the two runs")
    args = ap.parse_args(argv)
    for trim in {"both": (False, True), "off": (False,), "on": (True,)}[args.trim]:
        print(f"trim after large decodes {'on' if trim else 'off'}:")
        m = run(args.model, trim, args.big_side, args.idle)
        print(f"  RSS start {m['start']:.0f} MB, peak {m['peak']:.0f} MB, after the run {m['after']:.0f} MB, "
              f"idle {args.idle:g} s later {m['idle']:.0f} MB (ratio to start {m['idle'] / m['start']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
