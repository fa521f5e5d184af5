"""GPU check of finetune/lora/: LoRA and QLoRA steps on a tiny and a small random-weight Qwen2.5-VL.

    python bench/gpu_lora_check.py --out runs/bench                 # on a CUDA machine: ~3-4 minutes
    python bench/gpu_lora_check.py --out /tmp/b --cpu-smoke         # CPU dry run of the same code, small sizes

No weights can be downloaded, so the "small" model is built from a config with random weights: Qwen2.5-1.5B's text
dimensions (28 layers, hidden 1536, vocab 151 936) with an 8-block Qwen2.5-VL vision tower, about 1.9 B parameters.
Random weights train as fast and take as much memory as real ones; the loss values mean nothing. Samples are the
UCM fixture images (tests/fixtures/ucm) with their captions, single- and multi-turn, at 252x252 (81 image tokens).
Each run goes through `finetune.lora.train` (the code `python -m finetune.lora train` runs) and reports
steady-state samples/s (steps 10..end), peak allocated / reserved GPU memory and the loss at the first and last step.
Results: <out>/results.json and <out>/table.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune import lora  # noqa: E402
from testing.tiny_models import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, build_tiny_qwen2_5_vl, build_tokenizer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


@dataclass(frozen=True)
class SmallDims:
    """Text and vision sizes of the 'small' model (defaults: Qwen2.5-1.5B text, 8-block vision tower)."""

    hidden: int = 1536
    intermediate: int = 8960
    layers: int = 28
    heads: int = 12
    kv_heads: int = 2
    vocab: int = 151936
    vision_depth: int = 8
    vision_hidden: int = 1280
    vision_intermediate: int = 3420
    vision_heads: int = 16


CPU_SMOKE_DIMS = SmallDims(hidden=128, intermediate=256, layers=2, heads=4, kv_heads=2, vocab=1000, vision_depth=2,
                           vision_hidden=64, vision_intermediate=128, vision_heads=2)


def build_small_qwen2_5_vl(out: Path, dims: SmallDims, device: str) -> tuple[Path, int]:
    """A random-weight Qwen2.5-VL of `dims`, saved in bf16 (fp32 on CPU) with a real Qwen2.5-VL processor."""
    from transformers import (
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    head_dim = dims.hidden // dims.heads
    quarter = head_dim // 16  # mrope_section sums to head_dim / 2, split t:h:w = 2:3:3 as in Qwen2.5-VL [16, 24, 24]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=dims.vocab, hidden_size=dims.hidden, intermediate_size=dims.intermediate,
            num_hidden_layers=dims.layers, num_attention_heads=dims.heads, num_key_value_heads=dims.kv_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [2 * quarter, 3 * quarter, 3 * quarter]},
            pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=None,
        ),
        vision_config=dict(
            depth=dims.vision_depth, hidden_size=dims.vision_hidden, intermediate_size=dims.vision_intermediate,
            num_heads=dims.vision_heads, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            out_hidden_size=dims.hidden, window_size=112,
            fullatt_block_indexes=list(range(3, dims.vision_depth, 4)) or [dims.vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the GPU: seconds instead of a minute on the CPU
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    params = sum(p.numel() for p in model.parameters())
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT_TEMPLATE)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    return out, params


def write_samples(path: Path, n: int) -> Path:
    """n conversations over the UCM fixture images: one caption each, every fourth one a two-round dialogue."""
    captions = json.loads((FIXTURES / "ucm" / "captions.json").read_text(encoding="utf-8"))["images"]
    files = {p.stem.rsplit("_", 1)[1]: p.name for p in (FIXTURES / "ucm").glob("*.jpg")}
    rows = []
    for i in range(n):
        image = captions[i % len(captions)]
        sentence = image["sentences"][i % len(image["sentences"])]["raw"]
        messages = [{"role": "user", "content": "Describe this remote sensing image."},
                    {"role": "assistant", "content": sentence}]
        if i % 4 == 3:
            messages += [{"role": "user", "content": "这张遥感图像展现了什么场景？"},
                         {"role": "assistant", "content": files[image["filename"].split(".")[0]].split("_")[0]}]
        rows.append({"id": f"bench-{i}", "image": f"ucm/{files[image['filename'].split('.')[0]]}",
                     "messages": messages})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_one(name: str, base: Path, data: Path, out: Path, qlora: bool, steps: int, batch_size: int,
            num_workers: int) -> dict:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = lora.TrainConfig(base=str(base), data=data, data_root=FIXTURES, out=out / name, qlora=qlora,
                           max_steps=steps, batch_size=batch_size, grad_accum=1, log_every=1, save_every=steps,
                           num_workers=num_workers, gradient_checkpointing=True)
    t0 = time.perf_counter()
    result = lora.train(cfg)
    wall = time.perf_counter() - t0
    history = result.summary["history"]
    first = next(r for r in history if r["step"] >= min(10, steps // 2))
    last = history[-1]
    steady = (last["step"] - first["step"]) * batch_size / max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
    row = {
        "run": name, "qlora": qlora, "steps": result.summary["steps"], "batch_size": batch_size,
        "samples_per_s": round(steady, 2), "samples_per_s_overall": round(result.summary["samples_per_s"], 2),
        "peak_allocated_gib": _gib(torch.cuda.max_memory_allocated) if torch.cuda.is_available() else None,
        "peak_reserved_gib": _gib(torch.cuda.max_memory_reserved) if torch.cuda.is_available() else None,
        "trainable_params": result.summary["trainable_params"], "lora_modules": result.summary["lora_modules"],
        "loss_first": round(history[0]["loss"], 4), "loss_last": round(last["loss"], 4), "wall_s": round(wall, 1),
    }
    del result
    gc.collect()
    return row


def _gib(counter) -> float:
    return round(counter() / 2**30, 2)


def table(rows: list[dict], meta: dict) -> str:
    lines = [f"GPU LoRA check on {meta['device']} (torch {meta['torch']}, transformers {meta['transformers']}, "
             f"peft {meta['peft']}, bitsandbytes {meta['bitsandbytes']}); small model "
             f"{meta['small_params'] / 1e9:.2f} B params, random weights, bf16, gradient checkpointing, LoRA r16 on "
             "all language-model linear layers.", "",
             "| run | steps | batch | samples/s | peak alloc GiB | peak reserved GiB | trainable "
             "| loss first -> last |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["run"], r["steps"], r["batch_size"], r["samples_per_s"], r["peak_allocated_gib"],
                 r["peak_reserved_gib"], f"{r['trainable_params'] / 1e6:.2f} M",
                 f"{r['loss_first']} -> {r['loss_last']}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in meta["notes"]]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-lora")
    p.add_argument("--tiny-steps", type=int, default=300)
    p.add_argument("--small-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--budget-s", type=float, default=330, help="skip the remaining runs once this much time has gone")
    p.add_argument("--cpu-smoke", action="store_true", help="CPU dry run: small model shrunk, few steps")
    p.add_argument("--runs", default="tiny-lora,small-lora,tiny-qlora,small-qlora", help="comma list of the runs")
    args = p.parse_args(argv)
    import peft
    import transformers

    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dims = CPU_SMOKE_DIMS if args.cpu_smoke else SmallDims()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import bitsandbytes

        bnb_version = bitsandbytes.__version__
    except ImportError:
        bnb_version = None
    notes = []
    tiny = build_tiny_qwen2_5_vl(args.out / "tiny-base")
    small, small_params = build_small_qwen2_5_vl(args.out / "small-base", dims, device)
    notes.append(f"built models in {time.perf_counter() - started:.0f} s")
    data = write_samples(args.out / "train.jsonl", 64)
    plan = [("tiny-lora", tiny, False, args.tiny_steps), ("small-lora", small, False, args.small_steps),
            ("tiny-qlora", tiny, True, args.tiny_steps), ("small-qlora", small, True, args.small_steps)]
    plan = [run for run in plan if run[0] in args.runs.split(",")]
    rows = []
    for name, base, qlora, steps in plan:
        if qlora and bnb_version is None:
            notes.append(f"{name}: not measured, bitsandbytes is not importable here")
            continue
        if time.perf_counter() - started > args.budget_s:
            notes.append(f"{name}: skipped, time budget of {args.budget_s:.0f} s spent")
            continue
        try:
            rows.append(run_one(name, base, data, args.out, qlora, steps, args.batch_size, args.num_workers))
            print(json.dumps(rows[-1]), flush=True)
        except Exception as exc:  # one failing run (e.g. a bitsandbytes kernel) must not lose the others' figures
            notes.append(f"{name}: failed: {type(exc).__name__}: {exc}"[:400])
            print(notes[-1], flush=True)
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "bitsandbytes": bnb_version,
            "small_params": small_params, "dims": vars(dims) if not isinstance(dims, dict) else dims,
            "total_s": round(time.perf_counter() - started, 1), "notes": notes}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1), encoding="utf-8")
    text = table(rows, meta)
    (args.out / "table.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
