"""LoRA / QLoRA fine-tuning of a vision-language base (GLM-4.1V, GLM-4.6V-Flash, Qwen2.5-VL...) on conversation JSONL.

    python -m finetune.lora train --base zai-org/GLM-4.1V-9B-Base --data runs/data/train.jsonl \
        --val runs/data/val.jsonl --data-root ../shared/data --out runs/lora          # LoRA, 1 GPU
    python -m finetune.lora train ... --qlora                                          # 4-bit NF4 base (QLoRA)
    accelerate launch --config_file finetune/configs/ddp.yaml -m finetune.lora train ...        # 8 GPUs, DDP
    accelerate launch --config_file finetune/configs/zero3.yaml -m finetune.lora train ...      # DeepSpeed ZeRO-3
    python -m finetune.lora export --base zai-org/GLM-4.1V-9B-Base --adapter runs/lora --out merged/

Boundary: reads samples (the builder's conversation JSONL, or the original project's {"img","prompt","label"}
JSON), renders them with the processor's own chat template, learns only the assistant tokens, and writes a plain
peft adapter that `model_adapter` loads (`load_backend(model=base, adapter=out)`). Nothing here knows a model
family by name: the vision tower / projector come from `model_adapter.registry.QUIRKS[...].vision_modules`.
Multi-GPU and DeepSpeed come from `accelerate launch` (configs in finetune/configs/); docs/finetune.md has the
commands, the defaults' reasons and a memory table.

One module per concern: `config` (TrainConfig), `samples` (reading, encoding, dataset + collate), `loading`
(base + LoRA targets), `checkpoints`, `training` (checks and the loop), `plots`, `export`, `cli` (`__main__`).
"""

from finetune.lora.checkpoints import latest_checkpoint, save_adapter, save_checkpoint
from finetune.lora.cli import main
from finetune.lora.config import (
    CHECKPOINTS, DEFAULT_DATA_ROOT, IGNORE, PROJECTOR_FRAGMENTS, REPO, STATE_FILE, TOKEN_KEYS, TrainConfig,
)
from finetune.lora.export import export
from finetune.lora.loading import load_for_training, lora_module_names, lora_targets, resolve_dtype
from finetune.lora.plots import plot_losses
from finetune.lora.samples import (
    ConversationDataset, InputError, collate, encode, hf_messages, image_path, original_to_sample, read_samples,
    stop_token_ids,
)
from finetune.lora.training import SHAPE_OPTIONS, TrainResult, check_base, check_inputs, evaluate, model_inputs, train

__all__ = [
    "CHECKPOINTS", "DEFAULT_DATA_ROOT", "IGNORE", "PROJECTOR_FRAGMENTS", "REPO", "SHAPE_OPTIONS", "STATE_FILE",
    "TOKEN_KEYS", "ConversationDataset", "InputError", "TrainConfig", "TrainResult", "check_base", "check_inputs",
    "collate", "encode", "evaluate", "export", "hf_messages", "image_path", "latest_checkpoint", "load_for_training",
    "lora_module_names", "lora_targets", "main", "model_inputs", "original_to_sample", "plot_losses",
    "read_samples", "resolve_dtype", "save_adapter", "save_checkpoint", "stop_token_ids", "train",
]
