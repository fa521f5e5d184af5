"""SQLite cache of accepted translations, keyed by (model, prompt version, source text).

Only validated answers are stored, one row per unit as soon as it is accepted, so a rerun makes no request for
what is done and an interrupted run resumes where it stopped. Safe to share between the runner's threads.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS translations (
    model TEXT NOT NULL, prompt_version TEXT NOT NULL, source TEXT NOT NULL,
    result TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (model, prompt_version, source)
)"""


class TranslationCache:
    """`get` / `put` accepted results; one connection guarded by a lock (writes are tiny)."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()

    def get(self, model: str, prompt_version: str, source: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT result FROM translations WHERE model=? AND prompt_version=? AND source=?",
                (model, prompt_version, source)).fetchone()
        return row[0] if row else None

    def put(self, model: str, prompt_version: str, source: str, result: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?, ?)",
                             (model, prompt_version, source, result, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM translations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
