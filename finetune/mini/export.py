"""Stage 4 of the mini pipeline: `save_pretrained` of the trained model and its processor into --out, the training
history, the loss / accuracy curve and the model card."""

from __future__ import annotations

import json
from pathlib import Path


def stage_export(cfg, model, tokenizer, history: dict) -> Path:
    """Write the model directory (model, processor, training_history.json, curve, card); returns it."""
    from finetune.mini.card import write_card_and_curve
    from model_adapter.mini import RemoteGLMMiniImageProcessor, RemoteGLMMiniProcessor

    n_img = model.config.num_image_tokens
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.update(do_sample=False, max_new_tokens=96, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, repetition_penalty=1.0)
    model.save_pretrained(out)
    processor = RemoteGLMMiniProcessor(RemoteGLMMiniImageProcessor(), tokenizer, num_image_tokens=n_img)
    processor.save_pretrained(out)
    (out / "training_history.json").write_text(json.dumps(history, indent=1))
    write_card_and_curve(out, cfg, history)
    return out
