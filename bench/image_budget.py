"""Benchmark: what a decompression-bomb TIFF and a large allowed scene cost to open (issue 15, item 3).

    python -m bench.image_budget                              # this checkout
    python -m bench.image_budget --baseline /tmp/main-copy    # and another checkout (e.g. `git archive main`), ratios

Writes two deflate GeoTIFFs with rasterio into a temp dir: the issue's bomb (8 bands, 16-bit, 10 000 x 10 000,
~1.9 MB on disk, 1.6 GB to decode) and an allowed scene (8 bands, 16-bit, 5000 x 5000, 400 MB to decode). Each is
opened by `imagery.load_image` (the path of the web chat, storage, the agent and the API) in a fresh
process per case and checkout; prints the outcome, the seconds of the call, the peak RSS of the process
(VmHWM of /proc/self/status) and its growth during the call (the imports, torch included, come before it), then the
ratios baseline / this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, re, sys, time
from pathlib import Path

def rss():  # this process's peak RSS, MB (getrusage's ru_maxrss would carry the forking parent's over exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024

data = Path(sys.argv[1]).read_bytes()
import model_adapter.hf  # the local backend's imports (torch included) come first, in every checkout
try:
    from imagery import load_image
except ImportError:  # a baseline checkout from before imagery.load (issue 12)
    from model_adapter.images import load_image
before, started = rss(), time.perf_counter()
try:
    image = load_image(data)
    outcome = f"decoded to {image.width}x{image.height}"
except Exception as exc:
    outcome = f"refused ({type(exc).__name__})"
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - started, "peak_mb": rss(),
                  "growth_mb": rss() - before}))
"""


def write_cases(folder: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT))
    from testing.images import multiband_bomb, ramp_scene

    cases = {"bomb 8 x uint16 10000x10000": multiband_bomb(), "allowed 8 x uint16 5000x5000": ramp_scene(5000, 5000, 8)}
    paths = {}
    for i, (name, data) in enumerate(cases.items()):
        paths[name] = folder / f"case{i}.tif"
        paths[name].write_bytes(data)
    return paths


def measure(code: Path, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=code, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (before)")
    args = parser.parse_args(argv)
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cases(Path(tmp))
        for name, path in paths.items():
            print(f"{name}: {path.stat().st_size / 1e6:.2f} MB on disk")
            runs = {"this": measure(ROOT, path)}
            if args.baseline:
                runs["baseline"] = measure(args.baseline, path)
            for label, r in runs.items():
                print(f"  {label:8s} {r['outcome']:32s} {r['seconds']:6.2f} s  peak RSS {r['peak_mb']:6.0f} MB  "
                      f"growth {r['growth_mb']:6.0f} MB")
            if args.baseline:
                this, base = runs["this"], runs["baseline"]
                print(f"  baseline / this: time {base['seconds'] / max(this['seconds'], 1e-3):.1f}x, "
                      f"RSS growth {base['growth_mb'] / max(this['growth_mb'], 1.0):.1f}x")


if __name__ == "__main__":
    main()
