"""Stage 3 of RemoteGLM-mini training: the decoder + projector on conversations (the export is `finetune.mini.export`).

Boundary: gets the image cache and the trained `VisionEncoder` from `finetune.mini.pipeline`, features from
`finetune.mini.features`, the conversation JSONL from `finetune.data`; hands the trained model and tokenizer to
`finetune.mini.export`. Conversations are tokenised segment by segment exactly as
the chat template renders them (a test checks this), with loss on the assistant turns only. Conversations without
an image (the v2 upload requests) train the decoder alone; an image may arrive in a later user turn.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from finetune.mini.checkpoint import log_and_save, resume
from finetune.mini.config import vision_config
from finetune.mini.images import ImageSet
from model_adapter.mini.processing_remoteglm_mini import IMAGE_TOKEN

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}


# --- conversations -> token ids --------------------------------------------------------------------------------
def encode_conversation(tokenizer, messages: list[dict], num_image_tokens: int, image_turn: int | None = 0
                        ) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside assistant turns) of a conversation, the image at the start of user turn
    number `image_turn` (0 = the first; None = no image).

    Equal to tokenising the chat template's rendering (`<|user|><image>*N question<|assistant|>answer<|end|>...`).
    """
    ids, labels = [], []
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    image_done = image_turn is None
    user_turn = -1
    for m in messages:
        role_id = tokenizer.convert_tokens_to_ids(ROLE_TOKENS[m["role"]])
        text = tokenizer.encode(m["content"], add_special_tokens=False)
        if m["role"] == "assistant":
            ids += [role_id] + text + [end_id]
            labels += [-100] + text + [end_id]
            continue
        seg = [role_id]
        user_turn += m["role"] == "user"
        if m["role"] == "user" and not image_done and user_turn == image_turn:
            seg += [image_id] * num_image_tokens
            image_done = True
        seg += text
        ids += seg
        labels += [-100] * len(seg)
    return ids, labels


def image_key(row: dict) -> str | None:
    return f"{row['dataset']}/{Path(row['image']).stem}" if row.get("image") else None


def image_turn(row: dict) -> int | None:
    """Which user turn holds the row's image (None: a conversation without one)."""
    return int(row.get("meta", {}).get("image_turn", 0)) if row.get("image") else None


class ConversationSet:
    """Tokenised conversations with their feature rows (-1: no image); `batch(idx)` pads on the right."""

    def __init__(self, rows: list[dict], tokenizer, feats: dict, num_image_tokens: int, max_len: int = 160):
        self.items = []
        self.dropped = 0
        for r in rows:
            key = image_key(r)
            if key is not None and key not in feats["index"]:
                continue
            ids, labels = encode_conversation(tokenizer, r["messages"], num_image_tokens, image_turn(r))
            if len(ids) > max_len:
                self.dropped += 1
                continue
            row = feats["index"][key] if key is not None else -1
            self.items.append((torch.tensor(ids), torch.tensor(labels), row, r["dataset"], r["task"]))
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.items[i] for i in idx]
        width = max(len(it[0]) for it in items)
        ids = torch.full((len(items), width), self.pad_id)
        labels = torch.full((len(items), width), -100)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for j, (t, lab, *_) in enumerate(items):
            ids[j, : len(t)], labels[j, : len(t)], mask[j, : len(t)] = t, lab, 1
        return ids, labels, mask, torch.tensor([it[2] for it in items])


def decoder_loss(model, feats: dict, ids, labels, mask, rows, views, feature_dropout: float = 0.0
                 ) -> tuple[torch.Tensor, int, int]:
    """Next-token loss on labelled positions; LM head only where there is a label. Returns loss, correct, count.
    `rows` -1 marks a conversation without an image (its row gets no visual tokens; the others' fill the image
    placeholders in batch order, as `masked_scatter` reads them). `feature_dropout`: dropout on the global and grid
    features (not the scene probabilities), training only."""
    has = rows >= 0
    rows, views = rows[has], views[has]
    image_embeds = None
    if len(rows):
        grid = feats["grid"][rows, views].float()  # (B, G*G, C)
        pooled = feats["global"][rows]
        if feature_dropout:
            pooled, grid = F.dropout(pooled, feature_dropout), F.dropout(grid, feature_dropout)
        image_embeds = model.model.projector(pooled, feats["probs"][rows], grid)
    out, _ = model.model(input_ids=ids, attention_mask=mask, image_embeds=image_embeds, use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    target = labels[:, 1:]
    sel = target != -100
    logits = model.lm_head(hidden[sel])
    loss = F.cross_entropy(logits.float(), target[sel])
    correct = int((logits.argmax(-1) == target[sel]).sum())
    return loss, correct, int(sel.sum())


# --- stage driver ----------------------------------------------------------------------------------------------
def build_model(cfg, tokenizer, encoder):
    """Fresh RemoteGLM-mini with the trained vision encoder copied in."""
    from transformers import LlamaConfig

    from model_adapter.mini import RemoteGLMMiniConfig, RemoteGLMMiniForConditionalGeneration

    d = cfg.decoder
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d.hidden_size, num_hidden_layers=d.layers,
        num_attention_heads=d.heads, num_key_value_heads=d.heads, intermediate_size=d.intermediate_size,
        max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    config = RemoteGLMMiniConfig(
        text_config=text, **vars(vision_config(cfg)), image_size=cfg.image_size, vision_tta=True,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tie_word_embeddings=True,
        scene_token_heads=["ucm"] if cfg.decoder.focus_steps and cfg.decoder.focus_ucm_scene_token else None,
        scene_token=cfg.decoder.scene_token,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = RemoteGLMMiniForConditionalGeneration(config)
    model.model.vision.load_state_dict(encoder.state_dict())
    return model


def load_conversations(cfg) -> dict[str, list[dict]]:
    """The conversation JSONL of `finetune.data` (built into work/data on first use)."""
    from finetune.data import BuildConfig, build, read_jsonl

    data_dir = cfg.work / "data"
    if not (data_dir / "train.jsonl").exists():
        build(BuildConfig(data_root=cfg.data_root, out=data_dir, seed=cfg.seed))
    return {s: read_jsonl(data_dir / f"{s}.jsonl") for s in ("train", "val")}


def stage_decoder(cfg, sets: dict[str, ImageSet], encoder, feats: dict, history: dict):
    """Stage 3: tokenizer (trained, cached, or the start model's), then projector + decoder on the conversations;
    resumable from work/decoder.pt. Returns (model in eval mode, tokenizer)."""
    from finetune.mini.tokenizer import conversation_texts, train_tokenizer, wrap_tokenizer

    conv = load_conversations(cfg)
    tok_dir = cfg.work / "tokenizer"
    init = Path(cfg.decoder.init_from) if cfg.decoder.init_from else None
    if init is not None:  # the start model's vocabulary, so that its embeddings mean the same tokens
        from tokenizers import Tokenizer

        tokenizer = wrap_tokenizer(Tokenizer.from_file(str(init / "tokenizer.json")))
    elif (tok_dir / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tokenizer = wrap_tokenizer(Tokenizer.from_file(str(tok_dir / "tokenizer.json")))
    else:
        tokenizer = train_tokenizer(conversation_texts(conv["train"]), cfg.decoder.vocab_size)
        tokenizer.save_pretrained(tok_dir)
    model = build_model(cfg, tokenizer, encoder)
    if init is not None and not (cfg.work / "decoder.pt").exists():
        history["decoder_init"] = str(init)
        load_decoder_weights(model, init)
    n_img = model.config.num_image_tokens
    max_len = cfg.decoder.max_len
    train = ConversationSet(conv["train"], tokenizer, feats, n_img, max_len)
    history["decoder_data"] = {"conversations": len(train), "over_max_len": train.dropped,
                               "no_image": sum(it[2] < 0 for it in train.items)}
    val_rows = [r for r in conv["val"] if image_key(r) is None or image_key(r) in feats["index"]]
    g = torch.Generator().manual_seed(cfg.seed)
    val_pick = torch.randperm(len(val_rows), generator=g)[: cfg.decoder.val_samples].tolist()
    val = ConversationSet([val_rows[i] for i in val_pick], tokenizer, feats, n_img, max_len)
    train_feats = label_forced(feats, sets, model.config.scene_heads) if cfg.decoder.scene_token_labels else feats
    train_decoder(cfg, model, train, val, feats, history, train_feats)
    model.eval()
    return model, tokenizer


def load_decoder_weights(model, model_dir: Path) -> None:
    """Copy every weight but the vision encoder's from the RemoteGLM-mini in `model_dir` into `model` (same
    shapes required: a clear error otherwise, never a silent partial start)."""
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(shard))
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("model.vision.")}
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad or not state:
        raise ValueError(f"{model_dir} does not fit this decoder config (mismatched: {bad[:5] or 'no weights'})")
    missing = model.load_state_dict(state, strict=False).missing_keys
    missing = [k for k in missing if not k.startswith("model.vision.") and k != "lm_head.weight"]
    if missing:
        raise ValueError(f"{model_dir} lacks decoder weights: {missing[:5]}")


BUCKET = 16  # batches per length-sorted pool; NOTE: halved padded tokens (mean 50 vs ~95 per row) in a measurement


def bucketed_batch(weights: torch.Tensor, lengths: torch.Tensor, batch: int, step: int, seed: int) -> list[int]:
    """Indices of the step's batch: BUCKET batches are drawn at once (weighted, with replacement), sorted by length,
    cut into batches and served in a random order; deterministic in (seed, step) so resuming gives the same data."""
    pool, j = divmod(step, BUCKET)
    gen = torch.Generator().manual_seed(seed * 100003 + pool)
    idx = torch.multinomial(weights, batch * BUCKET, replacement=True, generator=gen)
    idx = idx[torch.argsort(lengths[idx], stable=True)]
    order = torch.randperm(BUCKET, generator=gen)
    k = int(order[j])
    return idx[k * batch : (k + 1) * batch].tolist()


def parse_shares(spec: str) -> dict[str, float]:
    """"describe=0.3,scene=0.1,*=0.2" -> {"describe": 0.3, "scene": 0.1, "*": 0.2} ("" = no shares)."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, val = part.partition("=")
        out[name.strip()] = float(val)
    return out


def sampling_weights(train: ConversationSet, task_shares: str, ucm_weight: float) -> torch.Tensor:
    """Per-conversation sampling weights: each task (or group, "*" = every task not named) gets its share of the
    draws, split evenly over its conversations; within a task, UCM conversations weigh `ucm_weight` times the
    others. Without shares every conversation weighs 1 (UCM `ucm_weight`), as in v1."""
    ds = torch.tensor([ucm_weight if it[3] == "ucm" else 1.0 for it in train.items])
    shares = parse_shares(task_shares)
    if not shares:
        return ds
    tasks = [it[4].removesuffix("_en").removesuffix("_zh") for it in train.items]
    named = set(shares) - {"*"}
    group = [t if t in named else "*" for t in tasks]
    mass: dict[str, float] = {}
    for g, w in zip(group, ds.tolist()):
        mass[g] = mass.get(g, 0.0) + w
    return torch.tensor([w * shares.get(g, 0.0) / mass[g] for g, w in zip(group, ds.tolist())])


def label_forced(feats: dict, sets: dict[str, ImageSet], scene_heads: list) -> dict:
    """`feats` with each labelled training image's own head set to the one-hot of its true class (the other heads
    keep the encoder's probabilities; validation images keep them all)."""
    probs = feats["probs"].clone()
    start = 0
    for name, classes in scene_heads:
        s = sets.get(name)
        for i in (s.index("train").tolist() if s is not None else []):
            row = feats["index"].get(f"{name}/{s.stems[i]}")
            if row is not None and int(s.labels[i]) >= 0:
                probs[row, start : start + len(classes)] = 0.0
                probs[row, start + int(s.labels[i])] = 1.0
        start += len(classes)
    return {**feats, "probs": probs}


def train_decoder(cfg, model, train: ConversationSet, val: ConversationSet, feats: dict, history: dict,
                  train_feats: dict | None = None) -> None:
    """Train projector + decoder (vision frozen) for cfg.decoder.steps mixed steps, then focus_steps UCM-focused
    ones; resumable from work/decoder.pt. Training batches read `train_feats` (default `feats`), validation `feats`."""
    d = cfg.decoder
    for p in model.model.vision.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=d.lr, weight_decay=d.weight_decay, betas=(0.9, 0.98))
    ckpt_path = cfg.work / "decoder.pt"
    start = 0
    ckpt = resume(ckpt_path, history, "decoder")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["step"]
    weights = sampling_weights(train, d.task_shares, d.ucm_weight)
    focus_weights = weights * torch.tensor([1.0 if it[3] == "ucm" else d.focus_other_weight for it in train.items])
    total = d.steps + d.focus_steps
    # With focus_ucm_scene_token, the focus phase (and the exported model) feed only the UCM head to the scene token.
    head_mask = torch.tensor(model.config.scene_token_mask())
    focus_feats = {**feats, "probs": feats["probs"] * head_mask}
    train_feats = train_feats if train_feats is not None else feats
    train_focus_feats = {**train_feats, "probs": train_feats["probs"] * head_mask}
    lengths = torch.tensor([len(it[0]) for it in train.items])
    warm = min(200, d.steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step >= d.steps:  # UCM-focus phase
            return d.focus_lr * 0.5 * (1 + math.cos(math.pi * (step - d.steps) / max(1, d.focus_steps)))
        if step < warm:
            return d.lr * (step + 1) / warm
        return d.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, d.steps - warm))))

    bar = tqdm(total=total, initial=start, desc="decoder", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    model.train()
    model.model.vision.eval()
    t_prev, run_loss, run_n = time.time(), 0.0, 0
    for step in range(start, total):
        idx = bucketed_batch(weights if step < d.steps else focus_weights, lengths, d.batch_size, step, cfg.seed)
        ids, labels, mask, rows = train.batch(idx)
        views = torch.randint(0, 8, (len(idx),), generator=torch.Generator().manual_seed(cfg.seed + 7 * step))
        for gparam in opt.param_groups:
            gparam["lr"] = lr_at(step)
        loss, _, _ = decoder_loss(model, train_feats if step < d.steps else train_focus_feats, ids, labels, mask,
                                  rows, views, d.feature_dropout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run_loss, run_n = run_loss + loss.item(), run_n + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if (step + 1) % d.val_every == 0 or step + 1 in (d.steps, total):
            phase_feats = feats if step + 1 <= d.steps else focus_feats
            stats = {"step": step + 1, "train_loss": run_loss / run_n,
                     **validate(model, val, phase_feats, d.batch_size)}
            run_loss, run_n = 0.0, 0
            t_prev = log_and_save(history, "decoder", stats, t_prev, {"model": model.state_dict(),
                                  "optimizer": opt.state_dict(), "step": step + 1}, ckpt_path, bar)
            model.train()
            model.model.vision.eval()
    bar.close()


@torch.no_grad()
def validate(model, val: ConversationSet, feats: dict, batch: int) -> dict:
    """Mean loss and next-token accuracy on the assistant tokens of the fixed validation subset (view 0)."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for i in range(0, len(val), batch):
        idx = list(range(i, min(i + batch, len(val))))
        ids, labels, mask, rows = val.batch(idx)
        loss, c, n = decoder_loss(model, feats, ids, labels, mask, rows, torch.zeros(len(idx), dtype=torch.long))
        total, correct, count = total + loss.item() * n, correct + c, count + n
    return {"val_loss": total / max(count, 1), "val_token_acc": correct / max(count, 1)}
