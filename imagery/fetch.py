"""Image bytes from a URL: data:, file:// or a plain local path (under an allowed directory), http(s).

The one URL -> bytes step for every entry point (vLLM's `MediaConnector` plays this part there): the LangChain chat
model and the tool (`bot/`) and the API server (`server/serving.py`) call it; decoding is `imagery.load`'s job.
Callers choose what they accept; the rule for local files is the same everywhere: with `allowed_dir`, a path or
file:// URL is refused unless it resolves under that directory, and it is refused before the file is looked at,
so the answer reveals nothing about paths outside.

    fetch_image_bytes("data:image/png;base64,iVBOR...")                        # bytes
    fetch_image_bytes("file:///srv/images/a.jpg", allowed_dir=Path("/srv/images"))
    fetch_image_bytes(url, allowed_dir, files=False, paths=False, remote=False, strict_data=True)  # data URLs only

Errors: `URLRefused` (a PermissionError) for a URL this caller does not accept, FileNotFoundError for a missing
local file, ValueError (binascii.Error) for a data URL that is not valid base64, httpx errors for http(s).
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import unquote, urlparse

REMOTE_TIMEOUT_S = 30.0


class URLRefused(PermissionError):
    """The URL's scheme, encoding or place is not accepted here; the message says what to send instead."""


def fetch_image_bytes(url: str, allowed_dir: Path | None = None, *, files: bool = True, paths: bool = True,
                      remote: bool = True, strict_data: bool = False) -> bytes:
    """The bytes `url` points at.

    `files`: file:// URLs are read; `paths`: anything that is neither data:, http(s):// nor file:// is a local
    path; `allowed_dir`: local files are read only under it (None: anywhere); `remote`: http(s) URLs are fetched;
    `strict_data`: data: URLs must be valid base64 (else percent-encoded bytes are taken as well)."""
    scheme = urlparse(url).scheme
    if scheme == "data":
        header, _, payload = url.partition(",")
        if ";base64" in header:
            return base64.b64decode(payload, validate=strict_data)
        if strict_data:
            raise URLRefused("image data URLs must be base64 encoded (data:image/png;base64,...)")
        return unquote(payload).encode()
    if scheme in ("http", "https") and remote:
        import httpx

        response = httpx.get(url, timeout=REMOTE_TIMEOUT_S, follow_redirects=True)
        response.raise_for_status()
        return response.content
    if (scheme == "file" and files) or (scheme not in ("file", "http", "https") and paths):
        return read_local(Path(unquote(urlparse(url).path) if scheme == "file" else url), allowed_dir)
    raise URLRefused(f"unsupported image URL scheme '{scheme or url[:20]}': send a data URL "
                     "(data:image/jpeg;base64,...)")


def read_local(path: Path, allowed_dir: Path | None = None) -> bytes:
    """A local file's bytes; with `allowed_dir`, only when `path` resolves under it (checked first)."""
    path = Path(path).resolve()
    if allowed_dir is not None and not path.is_relative_to(Path(allowed_dir).resolve()):
        raise URLRefused(f"local images are only allowed under {allowed_dir}")
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    return path.read_bytes()
