"""Small square thumbnails of stored images for the web chat's history, made once and kept beside the images.

A thumbnail is `<image dir>/thumbs/<sha256>.jpg` (THUMB_PX square, centre-cropped), written on first request from
the stored image and reused afterwards; it goes when its image goes. Callers get bytes (the web chat embeds them
as `data:` URIs), so no new file path is ever served.

    thumbs = Thumbnails(store.images)
    jpeg = thumbs.get(ref)          # bytes, or None when the image file is gone or unreadable
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from imagery import ImageError
from storage.images import ImageStore

THUMB_PX = 64  # shown at 40 CSS px: sharp on 1.5x screens, ~2 KB each
log = logging.getLogger(__name__)


class Thumbnails:
    def __init__(self, images: ImageStore, size: int = THUMB_PX):
        self.images = images
        self.size = size
        self.root = images.root / "thumbs"

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.jpg"

    def get(self, ref) -> bytes | None:
        """The thumbnail of an `ImageRef` as JPEG bytes, made now if it was never made."""
        path = self.path(ref.sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        try:
            image = self.images.open(ref.filename)
        except (ImageError, OSError) as exc:
            log.warning("no thumbnail for %s: %s", ref.filename, exc)
            return None
        buffer = io.BytesIO()
        ImageOps.fit(image.convert("RGB"), (self.size, self.size), Image.Resampling.LANCZOS).save(
            buffer, "JPEG", quality=80)
        data = buffer.getvalue()
        tmp = None
        try:  # write-then-rename: a reader never sees half a thumbnail
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError as exc:  # a full disk costs the cache, not the sidebar
            log.warning("thumbnail of %s not kept: %s", ref.filename, exc)
            if tmp:
                Path(tmp).unlink(missing_ok=True)
        return data

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
