"""Where the caption datasets live: the one default for every `--data-root` flag.

The folder holds ucm/, sydney/, rsicd/ and zh/ (see ../shared/data/README.md). `REMOTEGLM_DATA_ROOT` overrides the
default, which is `../shared/data` next to the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "REMOTEGLM_DATA_ROOT"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"


def data_root() -> Path:
    """The dataset folder: `$REMOTEGLM_DATA_ROOT` when set, else `../shared/data` next to the repository."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else DEFAULT_DATA_ROOT
