"""Benchmark: the bars of issue 16 (land-use map of a large scene), each line a figure or a ratio.

    python -m bench.landuse                       # all three parts, UCM test tiles from ../shared/data/ucm
    python -m bench.landuse --parts scale --side 10000 --no-tta

Prints, through the shipped RemoteGLM-mini's UCM scene head (`bot.landuse.analyze_scene`, batched):
  1. accuracy: tile-level accuracy on georeferenced mosaics built from UCM **test** tiles (ground truth known; the
     data README's split), all 210 once, shuffled (bar >= 0.85); also on the same mosaics written at 0.6 m/px
     (each tile downsampled 2x), which exercises the resampling by the GeoTIFF's pixel size;
  2. areas: a georeferenced synthetic GeoTIFF (0.3 m/px, EPSG:32650) of all 210 test tiles in blocks of one class:
     per class the true and the mapped km², relative error, and the share error in percentage points (bar: 5 %);
  3. scale: a SIDE x SIDE px 3-band GeoTIFF (default 10 000, tiled deflate, built from UCM tiles window by window)
     analysed in a child process: peak resident memory of that process (bar <= 2 GB), tiles per second.
Without ../shared/data/ucm the fixtures (tests/fixtures/ucm, 8 test images) stand in. Torch runs --threads threads
(default 1: the machine is shared); the header prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vocabulary.datasets import data_root  # noqa: E402
from vocabulary.scenes import UCM_SCENES  # noqa: E402
from settings import DEFAULT_MODEL_DIR  # noqa: E402

# ../shared/data/ucm from the main checkout (/work/main), or from a worktree one level deeper (/work/wt/NAME)
UCM_DIRS = [data_root() / "ucm", ROOT.parents[1] / "shared" / "data" / "ucm"]
FIXTURES = ROOT / "tests" / "fixtures" / "ucm"
CLASSES = list(UCM_SCENES)
TILE = 256


def test_tiles() -> list[tuple[str, np.ndarray]]:
    """(class, (256, 256, 3) uint8) for every UCM test image (caption file N.tif is class (N - 1) // 100)."""
    root = next((d for d in UCM_DIRS if (d / "dataset.json").exists()), None)
    if root is not None:
        images = json.loads((root / "dataset.json").read_text())["images"]
        out = []
        for item in images:
            if item["split"] != "test":
                continue
            n = int(Path(item["filename"]).stem)
            image = Image.open(root / "images" / f"{n}.jpg").convert("RGB").resize((TILE, TILE), Image.BICUBIC)
            out.append((CLASSES[(n - 1) // 100], np.asarray(image)))
        return out
    return [(p.stem.rsplit("_", 1)[0], np.asarray(Image.open(p).convert("RGB").resize((TILE, TILE))))
            for p in sorted(FIXTURES.glob("*.jpg"))]


def write_mosaic(path: Path, tiles: list[np.ndarray], cols: int, gsd: float = 0.3, scale: int = 1) -> Path:
    """Tiles row-major into a GeoTIFF at `gsd` m/px (tiles downsampled `scale` times, so gsd should be 0.3*scale)."""
    import rasterio
    from rasterio.transform import from_origin

    side = TILE // scale
    rows = -(-len(tiles) // cols)
    image = np.zeros((rows * side, cols * side, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        if scale > 1:
            tile = np.asarray(Image.fromarray(tile).resize((side, side), Image.LANCZOS))
        image[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile
    with rasterio.open(path, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=3,
                       dtype="uint8", crs="EPSG:32650", transform=from_origin(500000, 4000000, gsd, gsd),
                       tiled=True, compress="deflate") as dst:
        dst.write(image.transpose(2, 0, 1))
    return path


def accuracy(classifier, tiles, workdir: Path) -> None:
    order = list(range(len(tiles)))
    random.Random(0).shuffle(order)
    truth = [tiles[i][0] for i in order]
    cols = 15 if len(tiles) >= 100 else 4
    from bot.landuse import analyze_scene

    for scale in (1, 2):
        path = write_mosaic(workdir / f"acc{scale}.tif", [tiles[i][1] for i in order], cols, 0.3 * scale, scale)
        result = analyze_scene(path, classifier)
        got = [t.cls for t in result.tiles[: len(truth)]]
        right = sum(g == t for g, t in zip(got, truth))
        print(f"accuracy  mosaic of {len(truth)} UCM test tiles at {0.3 * scale:.1f} m/px ({result.tile_px} px tiles, "
              f"{result.rows}x{result.cols}): tile accuracy {right / len(truth):.3f} ({right}/{len(truth)})"
              + ("   bar >= 0.85: " + ("PASS" if right / len(truth) >= 0.85 else "FAIL") if scale == 1 else ""))


def areas(classifier, tiles, workdir: Path) -> None:
    """All test tiles sorted by class into blocks: true area per class = its tile count x 76.8 m x 76.8 m."""
    from bot.landuse import analyze_scene

    ordered = sorted(tiles, key=lambda t: CLASSES.index(t[0]))
    cols = 15 if len(ordered) >= 100 else 4
    path = write_mosaic(workdir / "areas.tif", [t for _, t in ordered], cols)
    result = analyze_scene(path, classifier)
    tile_km2 = (TILE * 0.3) ** 2 / 1e6
    true = {k: sum(c == k for c, _ in ordered) * tile_km2 for k in CLASSES}
    mapped = {s.key: s.km2 for s in result.shares()}
    total = sum(true.values())
    worst_rel, worst_pp = 0.0, 0.0
    print(f"areas     synthetic GeoTIFF {result.width}x{result.height} px at 0.3 m/px (EPSG:32650), "
          f"{total:.4f} km² in {len(ordered)} tiles:")
    for k in CLASSES:
        if not true[k] and not mapped.get(k):
            continue
        got = mapped.get(k, 0.0)
        rel = abs(got - true[k]) / true[k] if true[k] else float("inf")
        pp = abs(got - true[k]) / total * 100
        worst_rel, worst_pp = max(worst_rel, rel), max(worst_pp, pp)
        print(f"          {k:18s} true {true[k]:.4f} km²  mapped {got:.4f} km²  error {rel:6.1%} of the class, "
              f"{pp:.2f} pp of the scene")
    within = sum(abs(mapped.get(k, 0.0) - true[k]) <= 0.05 * true[k] for k in CLASSES if true[k])
    print(f"areas     classes within 5 % of their true area: {within}/{sum(1 for k in CLASSES if true[k])}; "
          f"worst class error {worst_rel:.1%}; worst share error {worst_pp:.2f} pp of the scene "
          f"(bar 5 %: {'PASS' if worst_pp <= 5 else 'FAIL'} as share of the scene, "
          f"{'PASS' if worst_rel <= 0.05 else 'FAIL'} per class)")


def build_large(path: Path, side: int, tiles) -> Path:
    """SIDE x SIDE 3-band uint8 GeoTIFF written one 256-row strip at a time (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = random.Random(1)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                       crs="EPSG:32650", transform=from_origin(500000, 4000000, 0.3, 0.3), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER") as dst:
        for y in range(0, side, TILE):
            h = min(TILE, side - y)
            strip = np.concatenate([rng.choice(tiles)[1] for _ in range(-(-side // TILE))], axis=1)[:h, :side]
            dst.write(strip.transpose(2, 0, 1), window=Window(0, y, side, h))
    return path


def scale_child(path: str, tta: bool, threads: int) -> None:
    """Run in a child process: analyse `path`, print one JSON line with the figures."""
    import torch

    torch.set_num_threads(threads)
    from bot.landuse import analyze_scene
    from model_adapter.scene_classifier import SceneClassifier

    classifier = SceneClassifier.from_pretrained(DEFAULT_MODEL_DIR, tta=tta)
    loaded_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # python + torch + the model, before the scene
    spent = {"classify": 0.0}
    classify = classifier.classify

    def timed(batch):
        started = time.perf_counter()
        out = classify(batch)
        spent["classify"] += time.perf_counter() - started
        return out

    classifier.classify = timed
    started = time.perf_counter()
    result = analyze_scene(path, classifier, batch_size=32)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tiles": len(result.tiles), "classified": result.counts()["classified"], "seconds": seconds,
                      "classify_s": spent["classify"], "peak_mb": peak_kb / 1024,
                      "loaded_mb": loaded_kb / 1024}))


def scale(side: int, tiles, workdir: Path, tta_modes: list[bool], threads: int) -> None:
    started = time.perf_counter()
    path = build_large(workdir / f"large{side}.tif", side, tiles)
    print(f"scale     built {side}x{side} px 3-band GeoTIFF ({path.stat().st_size / 1e6:.0f} MB on disk, "
          f"{side * side * 3 / 1e6:.0f} MB raw) in {time.perf_counter() - started:.0f} s")
    for tta in tta_modes:
        out = subprocess.run([sys.executable, __file__, "--child", str(path), "--threads", str(threads)]
                             + ([] if tta else ["--no-tta"]), capture_output=True, text=True, check=True)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        rate = figures["classified"] / figures["seconds"]
        print(f"scale     {'TTA (20 views, as in chat)' if tta else 'one view (--no-tta)'}: {figures['tiles']} tiles "
              f"({figures['classified']} classified) in {figures['seconds']:.1f} s = {rate:.1f} tiles/s "
              f"(classifier {figures['classify_s'] / figures['seconds']:.0%} of the time), {threads} torch thread(s); "
              f"peak memory {figures['peak_mb']:.0f} MB (bar <= 2048 MB: "
              f"{'PASS' if figures['peak_mb'] <= 2048 else 'FAIL'}; {figures['loaded_mb']:.0f} MB of it before "
              f"the scene was opened: python, torch, the model)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="accuracy,areas,scale", help="comma list of accuracy, areas, scale")
    parser.add_argument("--side", type=int, default=10_000, help="side in px of the scale test's GeoTIFF")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-tta", action="store_true", help="scale: only the single-view classifier")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        scale_child(args.child, not args.no_tta, args.threads)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from model_adapter.scene_classifier import SceneClassifier

    tiles = test_tiles()
    print(f"bench.landuse: {len(tiles)} UCM test tiles, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores, torch threads {args.threads}")
    classifier = SceneClassifier.from_pretrained(DEFAULT_MODEL_DIR)
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-landuse-") as tmp:
        workdir = Path(tmp)
        if "accuracy" in parts:
            accuracy(classifier, tiles, workdir)
        if "areas" in parts:
            areas(classifier, tiles, workdir)
        if "scale" in parts:
            scale(args.side, tiles, workdir, [False] if args.no_tta else [True, False], args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
