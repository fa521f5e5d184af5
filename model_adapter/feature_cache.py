"""A bounded cache of image features, so that a conversation's follow-up turns do not re-encode its image.

Keys are the SHA-256 of the decoded image (mode, size and pixels: the bytes the model sees, whatever file they
came from) together with the model's identity (path, adapter); values are the vision tower's output for that one
image, (N, d) on the model's device. Least recently used entries go first once `max_bytes` is exceeded. Thread-safe.

    cache = FeatureCache(max_bytes=256 * 2**20, model_key="checkpoints/remoteglm-mini")
    key = cache.key(image)
    features = cache.get(key)            # None on a miss
    cache.put(key, features)
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch
from PIL import Image


def image_sha256(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class FeatureCache:
    def __init__(self, max_bytes: int, model_key: str):
        self.max_bytes = max_bytes
        self.model_key = model_key
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, image: Image.Image) -> str:
        return hashlib.sha256(f"{self.model_key}\0{image_sha256(image)}".encode()).hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.numel() * dropped.element_size()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
