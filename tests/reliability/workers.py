"""Child processes for the reliability tests (run as `python -m tests.reliability.workers NAME ARGS...`).

    streamer DB_URL IMAGE_DIR CONVERSATION   answer one turn slowly into the store until killed
    fill_disk DIR                            on a tiny filesystem at DIR: fill it, then store an image and a turn
    appender DB_URL IMAGE_DIR CONVERSATION N TAG   append N messages to one conversation (another process too)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from bot.service import ConversationService
from model_adapter import ChatBackend, Completion, StreamChunk
from settings import Settings
from storage import ConversationStore, StorageError

PIECE = "片段"


class SlowBackend(ChatBackend):
    """Streams PIECE every 20 ms for a minute: long enough to be killed mid-answer."""

    model_name = "slow"

    def stream(self, messages, params=None, cancel: threading.Event | None = None):
        for i in range(3000):
            if cancel is not None and cancel.is_set():
                break
            yield StreamChunk(PIECE)
            time.sleep(0.02)
        yield StreamChunk("", Completion(PIECE * 3000, 5, 3000, "stop"))


def streamer(url: str, image_dir: str, conversation_id: str) -> None:
    store = ConversationStore(url, Path(image_dir))
    service = ConversationService(SlowBackend(), store, Settings(data_dir=Path(image_dir).parent))
    for event in service.send(conversation_id, "慢慢回答 answer slowly"):
        if event.kind == "delta" and event.text:
            print("STREAMING", flush=True)
            break
    for _ in service.send(conversation_id, "again"):  # the stream above was closed: this one is killed midway
        pass


def fill_disk(directory: str) -> None:
    """Print one JSON line: what the user saw and what stayed on disk when the disk was full."""
    root = Path(directory)
    store = ConversationStore(f"sqlite:///{root / 'remoteglm.db'}", root / "images")
    conv = store.create(title="before")
    store.append_message(conv.id, "user", "stored before the disk filled")
    before = store.get(conv.id)
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for size in (65536, 4096, 512, 1):  # fill every free block
        try:
            while os.write(fd, b"\0" * size):
                pass
        except OSError:
            pass
    os.close(fd)
    import numpy as np
    from PIL import Image
    import io

    noise = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")  # ~1.4 MB: cannot fit
    result: dict[str, object] = {}
    try:
        store.add_image(buffer.getvalue())
        result["image"] = "stored"
    except StorageError as exc:
        result["image"] = str(exc)
    try:
        for _ in range(200):  # small rows may still fit in free pages: keep writing until the disk says no
            store.append_message(conv.id, "user", "x" * 4000)
        result["message"] = "stored"
    except StorageError as exc:
        result["message"] = str(exc)
    result["parts"] = sorted(p.name for p in (root / "images").glob("*.part"))
    filler.unlink()
    after = store.get(conv.id)
    result["kept"] = [m.text for m in after.messages][: len(before.messages)] == [m.text for m in before.messages]
    store.append_message(conv.id, "user", "after space was freed")
    result["writable_again"] = store.get(conv.id).messages[-1].text == "after space was freed"
    print(json.dumps(result, ensure_ascii=False), flush=True)


def appender(url: str, image_dir: str, conversation_id: str, n: str, tag: str) -> None:
    """Append n messages as fast as possible; print one JSON line with how many raised."""
    store = ConversationStore(url, Path(image_dir), recover=False)
    errors = []
    for i in range(int(n)):
        try:
            store.append_message(conversation_id, "user", f"{tag} {i}")
        except Exception as exc:  # noqa: BLE001 - counted and reported to the test
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
    print(json.dumps({"errors": errors}), flush=True)


if __name__ == "__main__":
    {"streamer": streamer, "fill_disk": fill_disk, "appender": appender}[sys.argv[1]](*sys.argv[2:])
