"""Merging an adapter into its base and saving a plain model directory (`python -m finetune.lora export`)."""

from __future__ import annotations

from pathlib import Path

import torch

from model_adapter.hf import peft_quiet


def export(base: str, adapter: Path, out: Path, dtype: str = "auto", trust_remote_code: bool = False) -> Path:
    """Merge the adapter into the (unquantized) base with `merge_and_unload`; save a plain model dir + processor."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                                                        trust_remote_code=trust_remote_code)
    with peft_quiet():
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoProcessor.from_pretrained(base, trust_remote_code=trust_remote_code).save_pretrained(out)
    return Path(out)
