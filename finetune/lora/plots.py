"""The loss curve of a run (`loss.png` beside the adapter)."""

from __future__ import annotations

from pathlib import Path




def plot_losses(history: list[dict], path: Path) -> None:
    """Training loss per logged step and validation loss, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="train")
    val = [r for r in history if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    ax.set(xlabel="optimizer step", ylabel="loss (assistant tokens)", title="RemoteGLM LoRA")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
