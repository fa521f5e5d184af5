"""TIFFs that are cheap to send and dear to decode, written with rasterio (GDAL) as the issue's was.

`multiband_bomb()`: issue 15 item 3's file, 8 bands of 16-bit 10 000 x 10 000 pixels, deflate: about 1.9 MB on
disk, 1.6 GB to decode (written in a few seconds, once per test process). `ramp_scene()`: a smaller scene with a
different brightness per band, predictor-2 deflate so that it stays small on disk however large it declares.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

BOMB_SIDE, BOMB_BANDS = 10_000, 8


@functools.cache
def multiband_bomb() -> bytes:
    return ramp_scene(BOMB_SIDE, BOMB_SIDE, BOMB_BANDS, flat=True)


def ramp_scene(width: int, height: int, bands: int, dtype: str = "uint16", interleave: str = "pixel",
               flat: bool = False) -> bytes:
    """Band b (1-based) is a left-to-right ramp, brighter for each later band (flat: all zeros); written 500 rows
    at a time."""
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": dtype,
               "compress": "deflate", "interleave": interleave}
    if not flat:
        profile["predictor"] = 2
    top = 250 if dtype == "uint8" else 60_000
    step, rise = top // (bands + 1), top // (4 * (bands + 1))  # band b: step * b + (0 .. rise) left to right
    ramp = np.arange(width) * rise // max(1, width - 1)
    with warnings.catch_warnings(), rasterio.MemoryFile() as memfile:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memfile.open(**profile) as ds:
            rows = 500
            strip = np.zeros((bands, rows, width), dtype=dtype)
            if not flat:
                strip[:] = (np.arange(1, bands + 1)[:, None, None] * step + ramp[None, None, :]).astype(dtype)
            for top in range(0, height, rows):
                n = min(rows, height - top)
                ds.write(strip[:, :n], window=Window(0, top, width, n))
        return memfile.read()
