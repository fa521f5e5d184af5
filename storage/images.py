"""Content-addressed image files: each distinct image is stored once as <sha256>.<ext>.

Uploads are normalised first (`imagery.load_image`: header checked against the pixel and decode
limits before decoding, any mode -> RGB, pixel cap), so what is stored is exactly what the model saw and nothing is
stored for a refused file; JPEG and PNG inputs that need no change keep their original bytes (`imagery.probe`
tells which).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imagery.geotiff import is_tiff
from imagery.probe import probe
from imagery import ImageSource, image_bytes, load_image


@dataclass(frozen=True)
class ImageFile:
    sha256: str
    filename: str
    width: int
    height: int
    size_bytes: int


class ImageStore:
    def __init__(self, root: Path, max_pixels: int):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels
        self._remove_stale_parts()

    def _remove_stale_parts(self, older_than_s: float = 3600.0) -> None:
        """Half-written files a killed process left behind (recent ones may belong to a live writer)."""
        cutoff = time.time() - older_than_s
        for part in self.root.glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
            except OSError:
                pass

    def put(self, source: ImageSource, bands: Sequence[int] | str | None = None) -> tuple[ImageFile, Image.Image]:
        """Normalise and store an image (for multi-band TIFFs: the chosen `bands` as RGB); returns its record and
        the RGB image. Raises ImageError."""
        original = source if isinstance(source, (bytes, bytearray)) else None
        image = load_image(source, self.max_pixels, bands)
        data, ext = self._encoded(image, original)
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / f"{sha}.{ext}"
        if not path.exists():
            # Write-then-rename so a crash or a concurrent writer never leaves half a file under the final name.
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:  # full disk, interrupted: no half file stays behind
                Path(tmp).unlink(missing_ok=True)
                raise
        return ImageFile(sha, path.name, image.width, image.height, len(data)), image

    @staticmethod
    def _encoded(image: Image.Image, original: bytes | bytearray | None) -> tuple[bytes, str]:
        if original is not None and not is_tiff(bytes(original[:4])):  # a TIFF is always re-encoded (browsers)
            header = probe(bytes(original))
            unchanged = header.mode == "RGB" and (header.width, header.height) == image.size
            unrotated = header.orientation == 1  # an EXIF orientation would change what the model saw
            if header.format in ("JPEG", "PNG") and unchanged and unrotated:
                return bytes(original), "jpg" if header.format == "JPEG" else "png"
        return image_bytes(image, "PNG"), "png"

    def path(self, filename: str) -> Path:
        return self.root / filename

    def open(self, filename: str) -> Image.Image:
        return load_image(self.path(filename), self.max_pixels)

    def delete(self, filename: str) -> None:
        self.path(filename).unlink(missing_ok=True)
