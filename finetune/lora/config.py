"""The settings of one LoRA / QLoRA training run (`TrainConfig`, one field per `train` flag) and shared constants."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vocabulary.datasets import data_root


REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = data_root()
IGNORE = -100
# Per-token processor outputs and the value that pads them; every other tensor (pixel_values, image_grid_thw)
# is concatenated along dim 0 by `collate`.
TOKEN_KEYS = {"input_ids": None, "labels": IGNORE, "attention_mask": 0, "mm_token_type_ids": 0, "token_type_ids": 0}
# Inside the vision modules, the fragments that name the projector (`--include-projector` puts LoRA on it):
# Qwen2-VL / GLM-4V `visual.merger`, LLaVA-style `multi_modal_projector`, RemoteGLM-mini `projector`.
PROJECTOR_FRAGMENTS = ("merger", "projector")
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


class TrainConfig(BaseModel):
    """One training run; every field is the CLI flag of the same name (`--lora-rank 16`)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    base: str
    """Base model directory or hub name (any transformers VLM: GLM-4.1V, GLM-4.6V-Flash, Qwen2.5-VL...)."""
    data: Path
    """Training samples: conversation JSONL of `python -m finetune.data build`, or original {"img","prompt","label"} JSON."""
    val: Path | None = None
    """Validation samples (same formats); their loss is logged every --eval-every steps."""
    data_root: Path = DEFAULT_DATA_ROOT
    """Folder that relative image paths are read from (env REMOTEGLM_DATA_ROOT)."""
    out: Path = REPO / "runs" / "lora"
    """Output: the final adapter, checkpoints/, metrics.jsonl, loss.png."""
    qlora: bool = False
    """Load the base in 4-bit NF4 (bitsandbytes) and train LoRA on top (QLoRA); not with DeepSpeed ZeRO-3."""
    lora_rank: int = Field(16, ge=1)
    """LoRA rank r. 16 on every language-model linear layer is the usual VLM recipe; 8 loses little."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA alpha; alpha = 2r keeps the update scale (alpha / r = 2) when you change the rank."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input: a light regulariser for a few thousand caption-like samples."""
    target_modules: str | None = None
    """Override: a regex over module names that get LoRA (default: all language-model linear layers)."""
    include_projector: bool = False
    """Also put LoRA on the vision projector (merger); the vision tower itself is always left frozen."""
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate (AdamW, cosine decay after warmup)."""
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0)
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay on the LoRA weights."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (fractions allowed)."""
    max_steps: int | None = Field(None, ge=1)
    """Plan at most this many optimizer steps (overrides --epochs for the schedule)."""
    stop_after: int | None = Field(None, ge=1)
    """Stop (as if interrupted) after this optimizer step; the schedule still plans the full run. For jobs under a
    wall-time limit: rerun with --resume latest."""
    batch_size: int = Field(4, ge=1)
    """Samples per device per forward pass."""
    grad_accum: int = Field(4, ge=1)
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum x GPUs)."""
    max_length: int = Field(2048, ge=16)
    """Longest sequence in tokens (image tokens included); longer samples lose their tail (kept whole, with a
    warning, where the cut would reach into the image tokens or leave no answer token)."""
    max_pixels: int = Field(1024 * 1024, ge=28 * 28)
    """Images are downscaled to at most this many pixels before the processor sees them."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: about 30% slower, much less activation memory."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto': bf16 on GPUs that have it, else fp16 on GPUs, else fp32 (CPU); also the base weights' dtype.
    This flag, not the launcher's --mixed_precision, decides."""
    save_every: int = Field(200, ge=1)
    """Write a resumable checkpoint every N optimizer steps."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of the newest checkpoints to keep."""
    eval_every: int = Field(200, ge=1)
    """Validation loss every N optimizer steps (and at the end)."""
    val_max_samples: int = Field(256, ge=1)
    """Validate on at most this many samples (the first ones of --val)."""
    log_every: int = Field(10, ge=1)
    """Write the training loss to metrics.jsonl every N steps."""
    resume: str | None = None
    """'latest' (newest checkpoint in --out/checkpoints) or a checkpoint directory."""
    seed: int = 0
    """Seed of the shuffling, LoRA init and dropout."""
    num_workers: int = Field(2, ge=0)
    """DataLoader workers that load images and tokenize."""
    trust_remote_code: bool = False
    """Let the base checkpoint run its own code (only for checkpoints you trust)."""
