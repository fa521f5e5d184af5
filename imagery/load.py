"""Turn whatever a user hands us into a safe RGB PIL image: the one loader storage, the model layer, bot, the
server and the UI call (`from imagery import load_image`).

Accepts a path, raw bytes, a file-like object or a PIL image; converts every mode (palette, alpha, CMYK, 1-bit,
16-bit and float, multi-band) to 8-bit RGB; caps the pixel count *while decoding* where the format allows (JPEG
draft mode) and otherwise right after, so a 10 000 x 10 000 photo never reaches a processor at full size; refuses
non-images, empty, truncated files and decompression bombs with an `ImageError` whose message a person can act on.
Every file's header is checked before decoding (`imagery.header`: pixels, and width x height x bands x bytes per
sample against their decode budget; `ImageTooLarge` otherwise). TIFFs are read by `imagery.geotiff` (rasterio /
GDAL), which also chooses the bands shown.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from imagery.errors import ImageError
from imagery.geotiff import TIFF_MAGIC, is_tiff, read_tiff
from imagery.header import MAX_DECLARED_PIXELS, ImageHeader, ImageTooLarge, check_header
from imagery.memory import TRIM_AFTER_BYTES, release_free_memory
from imagery.probe import open_image

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "ImageSource", "ImageTooLarge", "MAX_DECLARED_PIXELS", "TIFF_MAGIC",
           "downscale", "image_bytes", "load_image", "to_rgb"]

ImageSource = str | Path | bytes | bytearray | BinaryIO | Image.Image

DEFAULT_MAX_PIXELS = 1024 * 1024


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS,
               bands: Sequence[int] | str | None = None) -> Image.Image:
    """Open `source` and return an 8-bit RGB image of at most `max_pixels` pixels. TIFFs (GeoTIFFs of any layout,
    depth and band count) go through `imagery.geotiff`; `bands` (1-based, e.g. (4, 3, 2)) picks which are shown.
    Files declaring more than MAX_DECLARED_PIXELS pixels, or more bytes to decode than their budget, raise
    `ImageTooLarge` (an ImageError) before any pixel is decoded."""
    if isinstance(source, Image.Image):
        image = source
    else:
        data = _read_bytes(source)
        if is_tiff(data):
            return to_rgb(downscale(read_tiff(data, max_pixels, bands), max_pixels))
        image = open_image(data)
    try:
        image = _first_frame(image)
        header = ImageHeader.of(image)
        check_header(header)
        _draft(image, max_pixels)
        image.load()
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data surfaces at load()
        raise ImageError(f"图像文件已损坏或不完整，无法解码 (the image is corrupt or truncated: {exc})") from exc
    image = to_rgb(downscale(ImageOps.exif_transpose(image), max_pixels))
    if header.decode_bytes > TRIM_AFTER_BYTES:  # the full-size decode is garbage now: give its pages back
        release_free_memory()
    return image


def _read_bytes(source: str | Path | bytes | bytearray | BinaryIO) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = ""
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"找不到图像文件 (no such image file): {path}")
        data, name = path.read_bytes(), f": {path.name}"
    else:
        data, name = source.read(), ""
    if not data:
        raise ImageError(f"文件为空 (the file is empty: 0 bytes){name}")
    return data


def _first_frame(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return image


def _draft(image: Image.Image, max_pixels: int) -> None:
    """Let JPEG decode at a reduced scale (1/2, 1/4, 1/8) when the full size is far over the cap."""
    if image.format == "JPEG" and image.width * image.height > 4 * max_pixels:
        scale = math.sqrt(max_pixels / (image.width * image.height))
        image.draft(image.mode, (max(1, int(image.width * scale * 2)), max(1, int(image.height * scale * 2))))


def downscale(image: Image.Image, max_pixels: int) -> Image.Image:
    """Shrink (never enlarge) so that width x height <= max_pixels, keeping the aspect ratio."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / pixels)
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    if image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"):
        image = _high_bit_depth_to_8bit(image)
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is flattened on white; 16-bit and float data are stretched."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth_to_8bit(image).convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Stretch a 16-bit / 32-bit / float band between its 2nd and 98th percentiles, as GIS viewers do."""
    array = np.asarray(image, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return Image.new("L", image.size)
    low, high = np.percentile(finite, [2, 98])
    if high <= low:
        high = low + 1
    scaled = np.clip((np.nan_to_num(array, nan=low) - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# Truncated files must fail loudly rather than be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
