"""Settings of one translation run: endpoint, mode, batching, concurrency, retries, budget, files.

Every field is a flag of `python -m translate run` (`--batch-size`, built from the field name by
`settings.add_flags`) and an environment variable with the REMOTEGLM_TRANSLATE_ prefix (REMOTEGLM_TRANSLATE_BASE_URL,
REMOTEGLM_TRANSLATE_MODEL, REMOTEGLM_TRANSLATE_API_KEY - or OPENAI_API_KEY -, REMOTEGLM_TRANSLATE_BATCH_SIZE...);
flags win over the environment. Errors name the flag and variable to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ENV_PREFIX = "REMOTEGLM_TRANSLATE_"
ENV_BASE_URL = "REMOTEGLM_TRANSLATE_BASE_URL"
ENV_MODEL = "REMOTEGLM_TRANSLATE_MODEL"
ENV_API_KEY = "REMOTEGLM_TRANSLATE_API_KEY"


class ConfigError(ValueError):
    """A missing or invalid setting; the message says which flag / variable to set."""


@dataclass
class TranslateConfig:
    """One run of `python -m translate run`."""

    captions: list[Path]
    """Karpathy-format caption files (dataset.json); several are translated as one set (flag: positional)."""
    out: Path
    """Output file: JSONL for sentences / rewrite, a JSON list for merge."""
    mode: Literal["sentences", "merge", "rewrite"] = "sentences"
    """sentences (one line per distinct sentence, the shipped format), merge (one paragraph per image, the original
    project's style), rewrite (richer faithful description per image, flagged "rewritten": true)."""
    base_url: str = ""
    """OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1 or http://localhost:8000/v1."""
    model: str = ""
    """Model name at the endpoint."""
    api_key: str = ""
    """API key (prefer the environment variable)."""
    batch_size: int = 20
    """Units (numbered lines) per request."""
    concurrency: int = 4
    """Requests in flight at once."""
    max_retries: int = 5
    """Retries of one request on 429 / 5xx / timeout / connection errors."""
    backoff: float = 1.0
    """First backoff in seconds, doubled on every retry."""
    timeout: float = 60.0
    """Seconds before a request counts as timed out."""
    max_attempts: int = 3
    """Attempts per unit when the answer has the wrong line count or fails validation."""
    max_requests: int | None = None
    """Budget: stop before making more requests than this."""
    max_tokens: int | None = None
    """Budget: stop once this many tokens were used."""
    cache: Path = Path("runs/translate/cache.sqlite")
    """SQLite cache of accepted translations."""
    id_start: int | None = None
    """First id of new sentences (default: after the largest reused id, else 0)."""
    reuse: list[Path] = field(default_factory=list)
    """Existing sentence files whose translations are kept as they are (flag --reuse, repeatable)."""
    prompt_dir: Path | None = None
    """Folder with <mode>.txt prompt files (default translate/prompts)."""
    progress: bool = True
    """Show a tqdm progress bar (--no-progress hides it)."""

    def resolved(self) -> TranslateConfig:
        """Fill endpoint values from the environment and validate; raises ConfigError."""
        self.base_url = self.base_url or os.environ.get(ENV_BASE_URL, "")
        self.model = self.model or os.environ.get(ENV_MODEL, "")
        self.api_key = self.api_key or os.environ.get(ENV_API_KEY, "") or os.environ.get("OPENAI_API_KEY", "")
        if not self.base_url:
            raise ConfigError(f"no endpoint: pass --base-url or set {ENV_BASE_URL}")
        if not self.model:
            raise ConfigError(f"no model: pass --model or set {ENV_MODEL}")
        if not self.api_key:
            raise ConfigError(f"no API key: pass --api-key or set {ENV_API_KEY} (or OPENAI_API_KEY); "
                              "local servers without auth accept any value, e.g. EMPTY")
        if self.batch_size < 1 or self.concurrency < 1 or self.max_attempts < 1:
            raise ConfigError("--batch-size, --concurrency and --max-attempts must be >= 1")
        for path in self.captions:
            if not Path(path).is_file():
                raise ConfigError(f"caption file not found: {path}")
        return self
