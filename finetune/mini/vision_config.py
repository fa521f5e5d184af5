"""Vision-stage hyper-parameters (a torch-free dataclass, shared by `config` and `vision`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VisionTrainConfig:
    """Stage-1 hyper-parameters."""

    epochs: int = 30
    """Passes over the (UCM-oversampled) training set."""
    batch_size: int = 64
    lr: float = 2e-3
    """Peak AdamW learning rate (cosine decay, 1 epoch warm-up)."""
    weight_decay: float = 0.05
    train_size: int = 112
    """Side of the random crops fed to the network during training; evaluation uses the full cached image."""
    min_scale: float = 0.6
    """Smallest crop side as a fraction of the image side."""
    ucm_repeat: int = 2
    """UCM training images appear this many times per epoch (UCM is the target, RSICD the helper)."""
    use_rsicd: bool = True
    label_smoothing: float = 0.1
    seed: int = 0
