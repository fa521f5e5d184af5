"""Loading a base for training: dtype, optional 4-bit NF4 (QLoRA), LoRA targets from the model registry's
vision modules (nothing here knows a model family by name)."""

from __future__ import annotations

from typing import Any

import torch

from model_adapter.hf import peft_quiet
from model_adapter.registry import quirks_for
from finetune.lora.config import PROJECTOR_FRAGMENTS, TrainConfig


def lora_targets(model: torch.nn.Module, vision_modules: tuple[str, ...], include_projector: bool) -> list[str]:
    """Full names of the linear layers that get LoRA: every one of the language model (not lm_head), plus the
    projector's when asked; never the vision tower.

    Full names rather than a regex: peft matches them exactly, and servers that read `target_modules` (vLLM checks
    each name's last part against the layers it can serve LoRA on) understand a plain list.
    """
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.split(".")[-1] == "lm_head":
            continue  # bitsandbytes' Linear4bit is a torch Linear too
        in_vision = any(f in name for f in vision_modules)
        if not in_vision or (include_projector and any(p in name for p in PROJECTOR_FRAGMENTS)):
            names.append(name)
    return names


def resolve_dtype(mixed_precision: str) -> tuple[str, torch.dtype]:
    """'auto' -> the mixed-precision mode and weight dtype this device supports."""
    if mixed_precision == "auto":
        if torch.cuda.is_available():
            mixed_precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            mixed_precision = "no"
    return mixed_precision, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def load_for_training(cfg: TrainConfig, device: torch.device, dtype: torch.dtype):
    """(processor, peft model): base (4-bit for QLoRA), gradient checkpointing, LoRA on the language model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.qlora:
        from model_adapter.hf import quantization_config

        kwargs["quantization_config"] = quantization_config(4, dtype, cfg.base, cfg.trust_remote_code)
        kwargs["device_map"] = {"": str(device)}
    processor = AutoProcessor.from_pretrained(cfg.base, trust_remote_code=cfg.trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(cfg.base, **kwargs)
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs, DDP and ZeRO
    if cfg.qlora:
        with peft_quiet():
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                    gradient_checkpointing_kwargs=gc_kwargs)
    elif cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
    vision = quirks_for(model.config.model_type).vision_modules
    target = cfg.target_modules or lora_targets(model, vision, cfg.include_projector)
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, task_type="CAUSAL_LM")
    with peft_quiet():
        return processor, get_peft_model(model, lora)


def lora_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]
