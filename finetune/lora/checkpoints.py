"""Resumable checkpoints of a LoRA run (accelerate state + trainable weights only) and the final adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


from finetune.lora.config import CHECKPOINTS, STATE_FILE


def _keep_trainable_weights(model_ids: set[int], models: list, weights: list, output_dir: str) -> None:
    """accelerate save hook: store only the trainable (LoRA) tensors, not a copy of the frozen base."""
    for i, model in enumerate(models):
        if i < len(weights) and id(model) in model_ids:
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in names}


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(Path(out, CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def save_adapter(accelerator, model, out: Path) -> None:
    """The peft adapter (adapter_config.json + adapter_model.safetensors), gathered from every rank under ZeRO-3."""
    state = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(out, state_dict=state, is_main_process=accelerator.is_main_process,
                                                    save_embedding_layers=False)


def save_checkpoint(accelerator, model, out: Path, state: dict, keep: int) -> Path:
    path = Path(out, CHECKPOINTS, f"step-{state['step']:07d}")
    kwargs = {"exclude_frozen_parameters": True} if _is_deepspeed(accelerator) else {}
    accelerator.save_state(str(path), **kwargs)
    save_adapter(accelerator, model, path / "adapter")
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        for old in sorted(Path(out, CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def _is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type.name == "DEEPSPEED"
