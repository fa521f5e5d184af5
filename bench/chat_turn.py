"""Benchmark: what the conversation service costs on top of the model, and storage latencies.

    python -m bench.chat_turn                                   # tiny random GLM-4V built in a temp dir
    python -m bench.chat_turn --model checkpoints/remoteglm-mini --postgres-url postgresql+psycopg://...

Prints (1) the ratio of one full chat turn through `ConversationService.ask` (history load from the database,
prompt build, streamed generation, persistence of both messages) to a bare `model.generate` on the identical
input, greedy, exactly --new-tokens new tokens on both sides (goal <= 1.05); (2) append-message and load-a-1000-message-conversation
latencies (median, p95) on SQLite and, when given, PostgreSQL. Runs are interleaved so drift hits both sides.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.service import ConversationService  # noqa: E402
from model_adapter import ChatMessage, GenerationParams, load_backend  # noqa: E402
from settings import Settings  # noqa: E402
from storage import ConversationStore  # noqa: E402

IMAGE = ROOT / "tests" / "fixtures" / "ucm" / "airplane_192.jpg"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_turn(model: str, new_tokens: int, reps: int, data_dir: Path) -> None:
    settings = Settings(model=model, data_dir=data_dir)
    backend = load_backend(settings)
    # Both sides encode the image (no feature cache): this measures what the service and streaming add to the model.
    backend.feature_cache = None
    # Both sides must write exactly `new_tokens` tokens: an end-of-answer token may not come earlier.
    backend.model.generation_config.min_new_tokens = new_tokens
    service = ConversationService(backend, ConversationStore.from_settings(settings), settings)
    params = GenerationParams(max_new_tokens=new_tokens, do_sample=False)
    image = service.store.add_image(IMAGE.read_bytes())

    def fresh_conversation() -> str:
        # The same two-turn history every time, so every measured turn sees the identical input.
        conv = service.start(title="bench")
        service.store.append_message(conv.id, "user", "这张遥感图像展现了什么场景？", images=[image])
        service.store.append_message(conv.id, "assistant", "这是一个机场，停着几架飞机。")
        return conv.id

    conv_id = fresh_conversation()
    messages = service.build_messages(service.history(conv_id)) + [ChatMessage("user", "图中有多少架飞机？")]
    _, inputs, gen_kwargs = backend._prepare([messages], params)

    def bare() -> tuple[float, int]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = backend.model.generate(**inputs, **gen_kwargs)
        return time.perf_counter() - start, out.shape[1] - inputs["input_ids"].shape[1]

    def ask() -> tuple[float, int]:
        conv = fresh_conversation()
        start = time.perf_counter()
        answer = service.ask(conv, "图中有多少架飞机？", params=params)
        return time.perf_counter() - start, answer.completion_tokens

    def streamed() -> tuple[float, int]:
        conv = fresh_conversation()
        start = time.perf_counter()
        done = [e for e in service.send(conv, "图中有多少架飞机？", params=params) if e.kind == "done"][0]
        return time.perf_counter() - start, done.completion.completion_tokens

    runs = {"bare model.generate": bare, "service.ask (blocking)": ask, "service.send (streamed)": streamed}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in runs.items():
            t, n = fn()
            times[name].append(t)
            assert n == new_tokens, f"{name} wrote {n} tokens, not {new_tokens}"
    print(f"model: {model}  new tokens per answer: {new_tokens}  reps: {reps}  torch threads: {torch.get_num_threads()}")
    base = statistics.median(times["bare model.generate"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26s} median {median * 1000:8.1f} ms   p95 {pct(values, 0.95) * 1000:8.1f} ms   "
              f"ratio to bare {median / base:.3f}")
    print("goal: a full chat turn / bare generate <= 1.05")
    service.store.close()


def bench_storage(name: str, url: str, image_dir: Path, appends: int, loads: int) -> None:
    store = ConversationStore(url, image_dir)
    conv = store.create(title="storage bench")
    append_times = []
    for i in range(1000):
        start = time.perf_counter()
        store.append_message(conv.id, "user" if i % 2 == 0 else "assistant", f"消息 {i} " + "遥感" * 40)
        if i < appends:
            append_times.append(time.perf_counter() - start)
    load_times = []
    for _ in range(loads):
        start = time.perf_counter()
        loaded = store.get(conv.id)
        load_times.append(time.perf_counter() - start)
    assert len(loaded.messages) == 1000
    print(f"{name:10s} append message   median {statistics.median(append_times) * 1000:7.2f} ms   "
          f"p95 {pct(append_times, 0.95) * 1000:7.2f} ms   (n={len(append_times)})")
    print(f"{name:10s} load 1000 msgs   median {statistics.median(load_times) * 1000:7.2f} ms   "
          f"p95 {pct(load_times, 0.95) * 1000:7.2f} ms   (n={loads})")
    store.delete(conv.id)
    store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: a tiny random GLM-4V built in a temp dir)")
    parser.add_argument("--new-tokens", type=int, default=64, help="exact number of new tokens per answer")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--postgres-url", help="also measure storage on this PostgreSQL URL (its tables are created)")
    parser.add_argument("--skip-turn", action="store_true", help="storage latencies only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if not args.skip_turn:
            model = args.model
            if model is None:
                from testing.tiny_models import build_tiny_glm4v

                model = str(build_tiny_glm4v(tmp_path / "tiny-glm4v"))
            bench_turn(model, args.new_tokens, args.reps, tmp_path / "turn")
        bench_storage("sqlite", f"sqlite:///{tmp_path / 'bench.db'}", tmp_path / "img", 200, 20)
        if args.postgres_url:
            bench_storage("postgresql", args.postgres_url, tmp_path / "img", 200, 20)


if __name__ == "__main__":
    main()
