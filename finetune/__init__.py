"""Fine-tuning: data builder, scene labels, mini model, LoRA and evaluation (see each module)."""
