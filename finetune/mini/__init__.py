"""RemoteGLM-mini training from scratch on CPU: one orchestrator over stage modules.

    python -m finetune.mini --data-root ../shared/data --out checkpoints/remoteglm-mini

- `config`: every option as dataclasses (pure data; CLI flags of the same names);
- `images`: the uint8 image cache of UCM / RSICD / Sydney with labels and splits;
- `vision`: stage 1, the ResNet encoder + scene heads (and its standalone sweep);
- `features`: stage 2, the frozen encoder's features of every train / val image;
- `tokenizer`: the byte-level BPE trained on the conversation corpus;
- `decoder`: stage 3, conversations -> tokens, the decoder's training loop;
- `export`: stage 4, the model directory (model, processor, history, curve, card);
- `card`: the model card and training curve;
- `checkpoint`: the atomic checkpoint write + history log every stage resumes from;
- `pipeline`: `run(cfg)` calls the stages in order, and the command line.

The runtime model itself lives in `model_adapter/mini/` (this package only trains it).
"""

from finetune.mini.config import SCENE_HEADS, DecoderTrainConfig, MiniTrainConfig

__all__ = ["SCENE_HEADS", "DecoderTrainConfig", "MiniTrainConfig"]
