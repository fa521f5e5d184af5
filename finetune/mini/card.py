"""Model card (README.md) and training curve (training_curve.png) of a RemoteGLM-mini checkpoint.

Written at the end of training by `finetune.mini`; re-run after evaluation to put the measured metrics in:
`python -m finetune.mini.card checkpoints/remoteglm-mini` (reads `eval/*.json` written by `finetune.evaluate`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ANCHORS = "VLAD-LSTM 0.503 / -, SAT (LAM-TL) 0.723 / -, SkyEyeGPT 0.784 / 2.37, RS-LLaVA-13B 0.728 / 3.49"


def plot_curve(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    vis = history.get("vision", [])
    if vis:
        ax = axes[0]
        ep = [v["epoch"] for v in vis]
        ax.plot(ep, [v["train_loss"] for v in vis], label="train loss")
        ax.set_xlabel("epoch")
        ax.set_title("stage 1: vision encoder (scene classification)")
        ax2 = ax.twinx()
        ax2.plot(ep, [v["train_acc"] for v in vis], "g--", label="train acc (augmented)")
        ax2.plot(ep, [v.get("val_acc", float("nan")) for v in vis], "r-", label="UCM val acc")
        ax2.set_ylim(0, 1)
        ax.legend(loc="center left")
        ax2.legend(loc="center right")
    dec = history.get("decoder", [])
    if dec:
        ax = axes[1]
        st = [v["step"] for v in dec]
        ax.plot(st, [v["train_loss"] for v in dec], label="train loss")
        ax.plot(st, [v["val_loss"] for v in dec], label="val loss")
        ax.set_xlabel("step")
        ax.set_title("stage 3: decoder (answer tokens)")
        ax2 = ax.twinx()
        ax2.plot(st, [v["val_token_acc"] for v in dec], "r-", label="val next-token acc")
        ax2.set_ylim(0, 1)
        ax.legend(loc="center left")
        ax2.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def count_params(model_dir: Path) -> dict[str, int]:
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for f in model_dir.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                part = "vision" if ".vision." in k else "projector" if ".projector." in k else "decoder"
                counts[part] = counts.get(part, 0) + _numel(st.get_slice(k).get_shape())
    return counts


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def metrics_section(model_dir: Path) -> str:
    files = sorted((model_dir / "eval").glob("*.json"))
    if not files:
        return "Not evaluated yet: run `python -m finetune.evaluate --model <this dir> --dataset ucm --split test`.\n"
    parts = []
    for f in files:
        md = f.with_suffix(".md")
        parts.append(md.read_text() if md.exists() else f"```\n{f.read_text()}\n```\n")
    return "\n".join(parts)


def write_card_and_curve(out: Path, cfg, history: dict) -> None:
    """README.md + training_curve.png in `out` (cfg: MiniTrainConfig or a dict of it)."""
    plot_curve(history, out / "training_curve.png")
    cfg_dict = cfg if isinstance(cfg, dict) else json.loads(json.dumps(_asdict(cfg), default=str))
    (out / "training_config.json").write_text(json.dumps(cfg_dict, indent=1, default=str))
    render_card(out)


def _asdict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _flag(name: str, value) -> str:
    """One flag as `python -m finetune.mini` parses it (settings.add_flags): bools as --x / --no-x, tuples as a,b."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    if isinstance(value, (tuple, list)):
        return f"--{name} {','.join(map(str, value))}"
    return f"--{name} {value}"


def training_command(cfg: dict) -> str:
    """The command that made this model: the default one, or the warm start's flags that differ from it."""
    cmd = "python -m finetune.mini --data-root ../shared/data --out checkpoints/remoteglm-mini"
    dec = cfg["decoder"]
    if not (cfg.get("vision_from") or dec.get("init_from")):
        return cmd
    from finetune.mini.config import DecoderTrainConfig

    flags = [f"--vision-from {cfg['vision_from']}"] if cfg.get("vision_from") else []
    flags += [_flag(f"decoder.{k.replace('_', '-')}", v) for k, v in dec.items()
              if k in DecoderTrainConfig.__dataclass_fields__ and v != getattr(DecoderTrainConfig(), k)]
    return cmd + " --work runs/mini-warm \\\n    " + " ".join(flags)


def warm_start_text(history: dict) -> str:
    parts = []
    if history.get("vision_from"):
        parts.append(f"the vision encoder is `{history['vision_from']}`'s, unchanged (its training is in that model's "
                     "card)")
    if history.get("decoder_init"):
        parts.append(f"the tokenizer, projector and decoder start from `{history['decoder_init']}`'s weights")
    return ("Warm start: " + "; ".join(parts) + ". The times below are this run's (features: their cache's own compute time).\n\n") if parts else ""


def vision_stage_text(cfg: dict, history: dict) -> str:
    if history.get("vision_from"):
        return "vision encoder taken over (0 min)"
    v = cfg["vision"]
    return (f"vision {v['epochs']} epochs (AdamW lr {v['lr']}, random dihedral view + random crop scale >= "
            f"{v['min_scale']} resized to {v['train_size']} px, label smoothing {v['label_smoothing']}) "
            f"{history.get('seconds', {}).get('vision', 0) / 60:.1f} min")


def last_vision_text(vis: dict) -> str:
    if not vis:
        return ""
    return (f"Last vision epoch: train acc (augmented) {vis.get('train_acc', float('nan')):.3f}, UCM val acc (one "
            f"view) {vis.get('val_acc', float('nan')):.3f}. ")


def scene_token_text(model_cfg: dict) -> str:
    crop = model_cfg.get("vision_scene_crop") or 0
    views = (f"5 crops of {crop:g} of the side x 4 rotations" if crop else "the 8 dihedral views")
    if model_cfg.get("scene_token", "probs") == "onehot":
        return f"each scene head's top class, from its probabilities averaged over {views}"
    return f"the scene heads' probabilities averaged over {views}"


def render_card(out: Path) -> None:
    cfg = json.loads((out / "training_config.json").read_text())
    history = json.loads((out / "training_history.json").read_text()) if (out / "training_history.json").exists() else {}
    model_cfg = json.loads((out / "config.json").read_text())
    params = count_params(out)
    size_mb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1e6
    secs = history.get("seconds", {})
    total_min = sum(secs.values()) / 60
    vis = history.get("vision", [{}])[-1]
    dec = history.get("decoder", [{}])[-1]
    t = model_cfg["text_config"]
    extra = (out / "CARD_NOTES.md").read_text() if (out / "CARD_NOTES.md").exists() else ""
    text = f"""# RemoteGLM-mini

A small Chinese / English remote-sensing vision-language chat model, trained from scratch on two CPU cores in
about {total_min:.0f} minutes, shipped in the repository as RemoteGLM's offline default model. It is trained to name the scene,
describe it (one sentence or a few), answer yes/no, counting, water / vegetation / buildings / roads, urban or
rural, density, colours, layout, land-use and "what else" questions, honour language requests ("用英文回答"),
repeat or refer back to its previous answer, say honestly what an image cannot tell (country, year, owner,
resolution...), and ask for an image when the conversation has none; how often it does each on phrasings it
was not trained on is measured below.

Load it like any transformers VLM (the `remoteglm_mini` architecture is registered when `model_adapter` is
imported; no `trust_remote_code`):

```python
import model_adapter.mini  # registers RemoteGLM-mini with the Auto classes
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained("checkpoints/remoteglm-mini")
processor = AutoProcessor.from_pretrained("checkpoints/remoteglm-mini")
```

## Architecture ({sum(params.values()) / 1e6:.2f} M parameters, {size_mb:.1f} MB safetensors, fp32)

| part | parameters | what |
|---|---|---|
| vision encoder | {params.get('vision', 0) / 1e6:.2f} M | ResNet, widths {model_cfg['vision_widths']}, blocks {model_cfg['vision_depths']}, stride-4 stem, {model_cfg['image_size']} px input; scene heads UCM (21) + RSICD (30) |
| projector | {params.get('projector', 0) / 1e6:.2f} M | global feature (averaged over the 8 dihedral views) + scene token ({scene_token_text(model_cfg)}) + {model_cfg['vision_grid']}x{model_cfg['vision_grid']} grid = {2 + model_cfg['vision_grid'] ** 2} visual tokens |
| decoder | {params.get('decoder', 0) / 1e6:.2f} M | Llama: {t['num_hidden_layers']} layers, d={t['hidden_size']}, {t['num_attention_heads']} heads, MLP {t['intermediate_size']}, RoPE, tied embeddings; byte-level BPE vocabulary of {t['vocab_size']} (one token per common Chinese character, whole English words) |

Prompt format (chat template): `<|user|><image>问题<|assistant|>答案<|end|>`; the processor expands `<image>`
into {2 + model_cfg['vision_grid'] ** 2} placeholder tokens whose embeddings are replaced by the visual tokens.
KV cache, left-padded batches, sampling and streaming come from transformers' `generate`.

## Data

Training splits only: UCM-captions (1 680 images), RSICD Karpathy train (8 736 images), the 9 available Sydney
images; the Chinese references of `data/zh` (faithful sentence translations). Conversations from `finetune.data`:
describe (zh/en), scene (zh/en), presence yes/no (zh/en), count (zh/en), multi-turn, and the v2 question intents
of `finetune/intents.py` (each image's fact sheet from its 5 + 5 references and label; hand-written phrasings in
`finetune/prompt_pools/v2/`, of which the held-out ones are never trained on): water, vegetation, buildings,
roads, urban / rural, density, colours, layout, land use, what else, summary, detailed description, unanswerable
questions, out-of-scope requests, upload requests without an image (also with the image arriving in the next
turn), language requests and 3-6 turn conversations with translate / refer-back turns. Draws per task:
`{cfg['decoder'].get('task_shares', '')}`; within a task UCM is sampled {cfg['decoder']['ucm_weight']}x as often as
the others. Validation: UCM val split (scene accuracy) and a fixed
subset of val conversations (answer-token loss / accuracy). Test splits are used by the evaluation only.

## Training

```bash
{training_command(cfg)}
```

{warm_start_text(history)}Seed {cfg['seed']}, {cfg['threads']} torch thread(s), resumable (same command). Stages and measured wall time on the
shared 2-core machine: image cache {secs.get('images', 0) / 60:.1f} min; {vision_stage_text(cfg, history)};
features (the same views as at inference) {secs.get('features', 0) / 60:.1f} min; decoder {cfg['decoder']['steps']} steps x
{cfg['decoder']['batch_size']} conversations (AdamW lr {cfg['decoder']['lr']}, vision frozen, dropout
{cfg['decoder'].get('feature_dropout', 0)} on the global / grid features, scene token
{"set to the true class of training images" if cfg['decoder'].get('scene_token_labels') else "from the encoder"}), then
{cfg['decoder'].get('focus_steps', 0)} steps weighted towards UCM (other datasets x{cfg['decoder'].get('focus_other_weight', 0)}, lr {cfg['decoder'].get('focus_lr', 0)},
scene token from {"the UCM head only" if cfg['decoder'].get('focus_ucm_scene_token') else "both heads"}; see the design notes)
{secs.get('decoder', 0) / 60:.1f} min. Total {total_min:.1f} min.

{last_vision_text(vis)}Last decoder validation: loss {dec.get('val_loss', float('nan')):.3f},
next-token accuracy {dec.get('val_token_acc', float('nan')):.3f}.

![training curve](training_curve.png)

## Metrics

Published UCM-captions anchors (BLEU-4 / CIDEr): {ANCHORS}.

{metrics_section(out)}
{extra}
## Limits

- It knows the 21 UCM and 30 RSICD scene classes and the vocabulary of their captions, nothing else; an image
  of another kind gets the nearest of those scenes. Answers are short, caption-like and often the typical
  sentence of the predicted class (see the evaluation's "beyond the class sentence" figure).
- Counting only covers what captions state (few images); numbers are frequently wrong.
- Without an image it can only ask for one, say what it does, or decline; it has no general knowledge.
- Chinese comes from translated English captions; no free-form Chinese knowledge or reasoning.
- Input is resized to {model_cfg['image_size']} px: fine detail of large scenes is lost.
"""
    (out / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir", type=Path)
    args = ap.parse_args(argv)
    history = json.loads((args.model_dir / "training_history.json").read_text())
    plot_curve(history, args.model_dir / "training_curve.png")
    render_card(args.model_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
