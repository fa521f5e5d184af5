"""What an image's header declares, and the decode budget every reader checks before it reads a pixel.

A header is cheap to read and says what a full decode would cost: width x height x bands x bytes per sample. The
budget is counted in 8-bit RGBA pixels (4 bytes each, what Pillow itself allocates for any 8-bit colour image), so
a JPEG or PNG is limited by its pixel count alone, and a deep multi-band TIFF by the bytes it would decode: an
8-band 16-bit 10 000 x 10 000 TIFF (1.6 GB to decode, from a 2 MB deflate file) is refused at any pixel limit
below 400 million, while a 10 000 x 10 000 RGB photo passes a 100 MP limit.

    header = ImageHeader("TIFF", 10_000, 10_000, bands=8, dtype="uint16")
    check_header(header, max_pixels=100_000_000)   # raises ImageTooLarge: 1.6 GB over the 400 MB budget

`imagery.probe.probe(data)` reads the header of any image; `imagery.geotiff.read_tiff` checks its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageMode

from imagery.errors import ImageError

# Pillow refuses to open anything declaring more (2 x Image.MAX_IMAGE_PIXELS, about 179 million pixels); every
# reader uses the same default, so that a file opens in all paths or in none.
MAX_DECLARED_PIXELS = 2 * 89_478_485
# The decode budget per allowed pixel: an 8-bit RGBA (or RGB, stored as RGBX) pixel in Pillow's memory.
BUDGET_BYTES_PER_PIXEL = 4


@dataclass(frozen=True)
class ImageHeader:
    """The size and sample layout an image file declares, read without decoding any pixel."""

    format: str  # Pillow's format name ("JPEG", "PNG", "TIFF", ...)
    width: int
    height: int
    bands: int  # samples per pixel as decoded (a band-per-page TIFF: its pages)
    dtype: str  # numpy name of one sample as decoded: "uint8", "uint16", "float32", "bool" (1-bit) ...
    mode: str | None = None  # Pillow's mode, for files Pillow decodes
    orientation: int = 1  # EXIF orientation (1: as stored)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        """Bytes a full decode of every band produces."""
        return self.pixels * self.bands * np.dtype(self.dtype).itemsize

    @property
    def bits(self) -> int:
        return 1 if self.dtype == "bool" else 8 * np.dtype(self.dtype).itemsize

    @classmethod
    def of(cls, image: Image.Image) -> ImageHeader:
        """The header of an opened (not yet loaded) Pillow image."""
        try:
            mode = ImageMode.getmode(image.mode)
            bands, dtype = len(mode.bands), np.dtype(mode.typestr).name
        except (KeyError, TypeError):  # a raw mode numpy has no type for: count it as 8-bit
            bands, dtype = len(image.getbands()), "uint8"
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: Pillow's exif_transpose will ignore it as well
            orientation = 1
        return cls(image.format or "", image.width, image.height, bands, dtype, image.mode,
                   orientation if isinstance(orientation, int) else 1)


class ImageTooLarge(ImageError):
    """The header declares more pixels, or more bytes to decode, than allowed (HTTP 413 at the API)."""

    def __init__(self, message: str, header: ImageHeader | None = None):
        super().__init__(message)
        self.header = header


def decode_budget(max_pixels: int) -> int:
    """Bytes an image may take to decode when `max_pixels` pixels are allowed."""
    return max_pixels * BUDGET_BYTES_PER_PIXEL


def check_header(header: ImageHeader, max_pixels: int = MAX_DECLARED_PIXELS) -> ImageHeader:
    """`header` if it fits `max_pixels` pixels and their decode budget; else ImageTooLarge (bilingual message)."""
    if header.width <= 0 or header.height <= 0:
        raise ImageError("图像尺寸无效 (the image has no pixels)")
    size = f"{header.width}×{header.height}"
    if header.pixels > max_pixels:
        raise ImageTooLarge(f"图像尺寸过大（{size}），疑似解压炸弹，已拒绝 (image declares {header.width}x"
                            f"{header.height} pixels, over the {max_pixels:,} limit)", header)
    budget = decode_budget(max_pixels)
    if header.decode_bytes > budget:
        layout = f"{header.bands} 波段 × {header.bits} 位"
        raise ImageTooLarge(
            f"图像过大：{size} 像素 × {layout}，解码需要 {_mb(header.decode_bytes)}，超过 {_mb(budget)} 的上限，"
            f"已拒绝；请裁剪、只保留需要的波段或转为 8 位 RGB (image too large: {header.width}x{header.height} pixels x "
            f"{header.bands} bands x {header.bits}-bit needs {_mb(header.decode_bytes)} to decode, over the "
            f"{_mb(budget)} limit; crop it, keep only the bands you need or convert it to 8-bit RGB)", header)
    return header


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"
