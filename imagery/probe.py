"""The one header probe: what any image file declares (format, size, bands, sample type, EXIF orientation), read
without decoding a pixel, and the checked version every decoder path calls before it decodes.

TIFFs are probed through rasterio (`imagery.geotiff.tiff_header`, so GDAL-only TIFFs such as 8-band 16-bit scenes
are probed too), everything else through Pillow's lazy open. The API server (`server/serving.py`, 413 over
max_input_pixels), the loader (`imagery.load.load_image`, so storage, the web chat, the LangChain
model, the tool and the agent) and the agent's metadata (`read_metadata`) all use it.

    header = probe(data)                               # ImageHeader, or ImageError for a non-image / corrupt file
    probe_checked(data, max_pixels=100_000_000)        # ImageTooLarge over the pixels or their decode budget
    read_metadata(data)   # {'format', 'width', 'height', 'mode', 'bands', 'bytes', 'geo'}: what the agent is told
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from imagery.errors import ImageError
from imagery.geotiff import georeferencing, is_tiff, tiff_header, tiff_info
from imagery.header import MAX_DECLARED_PIXELS, ImageHeader, ImageTooLarge, check_header


def open_image(data: bytes) -> Image.Image:
    """Pillow's lazy open (header only) with bilingual errors; Pillow's own bomb limit gives ImageTooLarge."""
    try:
        with warnings.catch_warnings():
            # Big-but-legal scenes are downscaled by their readers; only the hard limits refuse.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"图像尺寸过大，疑似解压炸弹，已拒绝 (image too large, refused: {exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("不是可识别的图像文件，请上传 JPEG、PNG、TIFF、BMP 或 WebP "
                         "(not a recognised image file)") from exc
    except OSError as exc:
        raise ImageError(f"无法读取图像 (cannot read the image: {exc})") from exc


def probe(data: bytes) -> ImageHeader:
    """The header of any image file (TIFF through rasterio, the rest through Pillow); no pixel is decoded."""
    if is_tiff(data):
        return tiff_header(data)
    with open_image(data) as image:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # readers decode the first frame only
        return ImageHeader.of(image)


def probe_checked(data: bytes, max_pixels: int = MAX_DECLARED_PIXELS) -> ImageHeader:
    """`probe`, then `check_header`: ImageTooLarge when the file declares more than `max_pixels` pixels or more
    bytes to decode than their budget (width x height x bands x bytes per sample)."""
    return check_header(probe(data), max_pixels)


def read_metadata(data: bytes) -> dict[str, Any]:
    """Format, size, bands, sample type and (for GeoTIFFs) CRS, pixel size and bounds of an image file, from its
    header. Raises ImageError for files that are not images."""
    if not is_tiff(data):
        header = probe(data)
        return {"format": header.format, "width": header.width, "height": header.height, "mode": header.mode,
                "bands": header.bands, "bytes": len(data)}
    info = tiff_info(data)
    return {"format": "TIFF", "width": info["width"], "height": info["height"], "mode": info["dtype"],
            "bands": info["bands"], "bytes": len(data), "geo": georeferencing(info)}
