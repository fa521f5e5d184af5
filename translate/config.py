"""Settings of one translation run: endpoint, mode, batching, concurrency, retries, budget, files.

Endpoint values come from flags, else the environment: REMOTEGLM_TRANSLATE_BASE_URL, REMOTEGLM_TRANSLATE_MODEL,
REMOTEGLM_TRANSLATE_API_KEY (or OPENAI_API_KEY). Errors name the flag and variable to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    """Output file: JSONL for sentences / rewrite, a JSON list for merge (flag --out)."""
    mode: str = "sentences"
    """sentences (one line per distinct sentence, the shipped format), merge (one paragraph per image, the original
    project's style), rewrite (richer faithful description per image, flagged "rewritten": true) (flag --mode)."""
    base_url: str = ""
    """OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1 or http://localhost:8000/v1 (flag --base-url)."""
    model: str = ""
    """Model name at the endpoint (flag --model)."""
    api_key: str = ""
    """API key (flag --api-key; prefer the environment variable)."""
    batch_size: int = 20
    """Units (numbered lines) per request (flag --batch-size)."""
    concurrency: int = 4
    """Requests in flight at once (flag --concurrency)."""
    max_retries: int = 5
    """Retries of one request on 429 / 5xx / timeout / connection errors (flag --max-retries)."""
    backoff: float = 1.0
    """First backoff in seconds, doubled on every retry (flag --backoff)."""
    timeout: float = 60.0
    """Seconds before a request counts as timed out (flag --timeout)."""
    max_attempts: int = 3
    """Attempts per unit when the answer has the wrong line count or fails validation (flag --max-attempts)."""
    max_requests: int | None = None
    """Budget: stop before making more requests than this (flag --max-requests)."""
    max_tokens: int | None = None
    """Budget: stop once this many tokens were used (flag --max-tokens)."""
    cache: Path = Path("runs/translate/cache.sqlite")
    """SQLite cache of accepted translations (flag --cache)."""
    id_start: int | None = None
    """First id of new sentences (default: after the largest reused id, else 0) (flag --id-start)."""
    reuse: list[Path] = field(default_factory=list)
    """Existing sentence files whose translations are kept as they are (flag --reuse, repeatable)."""
    prompt_dir: Path | None = None
    """Folder with <mode>.txt prompt files (default translate/prompts) (flag --prompt-dir)."""
    progress: bool = True
    """Show a tqdm progress bar (flag --no-progress to hide)."""

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
