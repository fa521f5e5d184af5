"""Fine-tuning, one folder per job:

- `data/`: the instruction data (`python -m finetune.data build`);
- `lora/`: LoRA / QLoRA fine-tuning of a large VLM base (`python -m finetune.lora train|export`);
- `mini/`: RemoteGLM-mini trained from scratch on CPU (`python -m finetune.mini`);
- `evaluate/`: any model on a caption test split (`python -m finetune.evaluate`).
The dataset vocabulary (scene classes, glossary, object terms) is `vocabulary/`, below all four.
"""
