"""Local transformers backend: any native vision-language model through AutoModelForImageTextToText.

Loads from a local directory or a hub name (the normal `from_pretrained` path), optionally quantized with
bitsandbytes (4-bit NF4 or 8-bit) and with a peft LoRA adapter on top; prompts are rendered by the model's own
chat template; architecture differences come from `registry.QUIRKS`. One request builder (`_request`) serves the
blocking, batched and streaming paths, and all of them run through one scheduler thread that batches concurrent
callers (`model_adapter/batching.py`). Vision features are cached per image (`model_adapter/feature_cache.py`), so
a conversation's follow-up turns do not re-encode its image.

    backend = HFBackend.from_settings(Settings(model="checkpoints/remoteglm-mini"))
    backend.generate([ChatMessage("user", "这张遥感图像展现了什么场景？", [image])]).text
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import warnings
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)

import model_adapter.mini  # noqa: F401  (registers RemoteGLM-mini with the Auto classes)
from model_adapter.base import (
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    StreamChunk,
    model_generation_defaults,
    resolve_generation,
)
from model_adapter.batching import Request, RowStreamer, Scheduler
from model_adapter.detokenize import Detokenizer
from model_adapter.feature_cache import FeatureCache
from model_adapter.registry import quirks_for
from settings import Settings

log = logging.getLogger(__name__)

# NOTE: measured with `python -m bench.speed` on the 2-core reference machine (docs/speed.md): 1 intra-op thread
# was about as fast as 2 when idle and up to several times faster when the cores were shared with other work
# (the streamer's thread and other sessions compete with torch's second thread).
DEFAULT_CPU_THREADS = 1


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to change."""


def pick_device(device: str) -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def to_hf_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our messages -> the content-list format every VLM chat template reads."""
    return [
        {
            "role": m.role,
            "content": [{"type": "image"} for _ in m.images] + ([{"type": "text", "text": m.text}] if m.text else []),
        }
        for m in messages
    ]


class _RowsDone(StoppingCriteria):
    """Per-row stop: the rows whose request ended (see `batching.RowStreamer`)."""

    def __init__(self, streamer: RowStreamer):
        self.streamer = streamer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return self.streamer(input_ids, scores)


class HFBackend(ChatBackend):
    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        quant: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_new_tokens: int = 512,
        max_new_tokens_limit: int = 4096,
        generation_overrides: dict[str, Any] | None = None,
        max_batch_size: int = 16,
        max_queue: int = 32,
        image_cache_mb: float = 256.0,
        torch_threads: int | None = None,
    ):
        self.model_name = Path(model).name if Path(model).exists() else model
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if self.device.type == "cpu":
            set_cpu_threads(torch_threads)
        self.max_new_tokens = max_new_tokens
        self.max_new_tokens_limit = max_new_tokens_limit
        self.processor, self.model = _load(model, adapter, quant, self.device, self.dtype, trust_remote_code)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # batched generation continues from the right edge
        self.quirks = quirks_for(self.model.config.model_type)
        self.model_defaults = model_generation_defaults(self.model.generation_config.to_diff_dict(),
                                                        generation_overrides)
        self.eos_ids = _as_set(self.model.generation_config.eos_token_id) | _as_set(self.tokenizer.eos_token_id)
        self.pad_id = self.model.generation_config.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id
        self.feature_cache = None
        if image_cache_mb > 0 and self.quirks.image_features is not None:
            self.feature_cache = FeatureCache(int(image_cache_mb * 2**20), f"{Path(model).resolve()}|{adapter}")
        # The scheduler's thread is the only one that runs the model: concurrent callers (web sessions, server,
        # agent) share its batches instead of doubling peak memory or racing on peft / generation state.
        self.max_concurrent = max(1, max_batch_size)
        self.scheduler = Scheduler(self._run_batch, self.max_concurrent, max_queue)

    @classmethod
    def from_settings(cls, settings: Settings) -> HFBackend:
        return cls(
            settings.model,
            adapter=settings.adapter,
            quant=settings.quant,
            device=settings.device,
            dtype=settings.dtype,
            trust_remote_code=settings.trust_remote_code,
            max_new_tokens=settings.max_new_tokens,
            max_new_tokens_limit=settings.max_new_tokens_limit,
            generation_overrides=settings.generation_overrides(),
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            image_cache_mb=settings.image_cache_mb,
            torch_threads=settings.torch_threads,
        )

    # --- request building -------------------------------------------------------------------------------------
    def render_prompt(self, messages: list[ChatMessage]) -> str:
        prompt = self.processor.apply_chat_template(
            to_hf_messages(messages), add_generation_prompt=True, tokenize=False
        )
        expected = sum(len(m.images) for m in messages)
        if prompt.count(self.quirks.image_token) != expected:
            raise ModelLoadError(
                f"the chat template of {self.model_name} wrote {prompt.count(self.quirks.image_token)} "
                f"'{self.quirks.image_token}' placeholders for {expected} images; check the model's chat template"
            )
        return prompt

    def count_prompt_tokens(self, messages: list[ChatMessage]) -> int | None:
        return len(self.tokenizer(self.render_prompt(messages), add_special_tokens=False)["input_ids"])

    def _request(self, messages: list[ChatMessage], params: GenerationParams | None,
                 cancel: threading.Event | None, stream: bool) -> Request:
        """Everything about a request that can fail on its input, done in the caller's thread."""
        params = params or GenerationParams()
        gen_kwargs = resolve_generation(params, self.model_defaults, self.max_new_tokens, self.max_new_tokens_limit)
        gen_kwargs["pad_token_id"] = self.pad_id
        # Rows of one generate() share every setting but the token budget (each row stops at its own); a seeded
        # request runs alone so that its seed means what it says.
        group = (tuple(sorted((k, v) for k, v in gen_kwargs.items() if k != "max_new_tokens")),
                 params.seed if params.seed is None else object())
        return Request(messages, self.render_prompt(messages), gen_kwargs, group, cancel or threading.Event(),
                       stream, seed=params.seed, detok=Detokenizer(self.tokenizer) if stream else None)

    def _prepare(
        self, conversations: list[list[ChatMessage]], params: GenerationParams | None
    ) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        """The prompts, model inputs and generate() arguments of one batch (benchmarks call it for the bare side)."""
        requests = [self._request(messages, params, None, False) for messages in conversations]
        inputs = self._inputs(requests)
        return [r.prompt for r in requests], inputs, dict(requests[0].gen_kwargs)

    def _inputs(self, requests: list[Request]) -> dict[str, Any]:
        images = [image for r in requests for m in r.messages for image in m.images]
        batch = self.processor(text=[r.prompt for r in requests], images=images or None, return_tensors="pt",
                               padding=True)
        if any(r.tokens for r in requests):  # rows carried over from a batch that let others join
            batch = _continued(dict(batch), [r.tokens for r in requests], self.pad_id)
        wanted = self.quirks.model_inputs
        inputs = {
            name: (value.to(self.model.device, self.dtype) if value.is_floating_point() else value.to(self.model.device))
            for name, value in batch.items()
            if isinstance(value, torch.Tensor) and (wanted is None or name in wanted)
        }
        if images and self.feature_cache is not None and "pixel_values" in inputs:
            inputs = self._with_cached_features(inputs, images)
        return inputs

    @torch.inference_mode()
    def _with_cached_features(self, inputs: dict[str, Any], images: list) -> dict[str, Any]:
        """Replace pixel_values by per-image vision features, encoding only the images the cache lacks."""
        pixels = inputs.pop("pixel_values")
        grid = inputs.get("image_grid_thw")
        rows = self.quirks.image_features(pixels, grid)  # per image: its slice of pixel_values (and grid row)
        keys = [self.feature_cache.key(image) for image in images]
        features: list[torch.Tensor | None] = [self.feature_cache.get(key) for key in keys]
        missing = [i for i, f in enumerate(features) if f is None]
        if missing:
            encoded = self.quirks.encode_images(self.model, [rows[i] for i in missing])
            for i, value in zip(missing, encoded):
                features[i] = value
                self.feature_cache.put(keys[i], value)
        return self.quirks.feed_features(self.model, inputs, features)

    def _completion(self, request: Request) -> Completion:
        new = request.tokens
        ended = next((i for i, t in enumerate(new) if t in self.eos_ids), None)
        kept = new if ended is None else new[: ended + 1]
        if ended is not None:
            reason = "stop"
        elif len(new) >= request.max_new_tokens:
            reason = "length"
        else:  # neither eos nor the token budget ended it: a stop request did, or the user's cancel
            reason = "cancelled" if request.cancel.is_set() else "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text=text, prompt_tokens=request.prompt_tokens, completion_tokens=len(kept),
                          finish_reason=reason, prompt=request.prompt)

    def _finish(self, request: Request) -> None:
        if request.stream and (tail := request.detok.flush()):
            request.out.put(tail)
        request.answer(self._completion(request))

    # --- generation (scheduler thread) ----------------------------------------------------------------------------
    @torch.inference_mode()
    def _run_batch(self, requests: list[Request]) -> None:
        inputs = self._inputs(requests)
        for request, count in zip(requests, inputs["attention_mask"].sum(dim=1).tolist()):
            if not request.tokens:  # a carried row keeps the size of its own prompt
                request.prompt_tokens = int(count)
        gen_kwargs = dict(requests[0].gen_kwargs)
        gen_kwargs["max_new_tokens"] = max(r.tokens_left for r in requests)
        if requests[0].seed is not None:
            torch.manual_seed(requests[0].seed)
        streamer = RowStreamer(requests, self.eos_ids, self._finish, self.scheduler.room_wanted)
        started = time.perf_counter()
        try:
            self.model.generate(**inputs, **gen_kwargs, streamer=streamer,
                                stopping_criteria=StoppingCriteriaList([_RowsDone(streamer)]))
        finally:
            carried = [r for r in requests if streamer.yielded and r.ended is None]
            for request in requests:  # rows generate() ended by itself (its own stopping rules)
                if not request.answered and request not in carried:
                    self._finish(request)
        log.debug("batch of %d: %.2fs%s", len(requests), time.perf_counter() - started,
                  f", {len(carried)} rows go on with newcomers" if carried else "")

    # --- generation (callers) -------------------------------------------------------------------------------------
    def generate(self, messages: list[ChatMessage], params: GenerationParams | None = None) -> Completion:
        return self.generate_batch([messages], params)[0]

    def generate_batch(
        self, conversations: list[list[ChatMessage]], params: GenerationParams | None = None
    ) -> list[Completion]:
        """Answer several conversations, `max_batch_size` at a time in one batch each (and alongside whatever
        other callers submit meanwhile)."""
        completions: list[Completion] = []
        for start in range(0, len(conversations), self.max_concurrent):
            requests = [self._request(m, params, None, False)
                        for m in conversations[start:start + self.max_concurrent]]
            self.scheduler.submit(requests)
            for request in requests:
                completions.extend(p for p in request.pieces() if isinstance(p, Completion))
        return completions

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        request = self._request(messages, params, cancel, stream=True)
        self.scheduler.submit([request])
        try:
            for piece in request.pieces():
                yield StreamChunk(piece) if isinstance(piece, str) else StreamChunk("", piece)
        finally:
            # Reached on normal end, on an exception, and when the consumer closes the generator early: the row
            # stops at the next step (or never starts), the rest of its batch goes on.
            request.cancel.set()

    @property
    def queue_stats(self) -> dict[str, int]:
        s = self.scheduler
        return {"running": s.running, "waiting": s.waiting, "batches": s.batches, "largest_batch": s.largest_batch}

    def close(self) -> None:
        self.scheduler.close()


def _continued(batch: dict[str, Any], tokens: list[list[int]], pad_id: int) -> dict[str, Any]:
    """A left-padded processor batch with each row's generated `tokens` appended (and padded left again): the
    prompt of a row that goes on in a new generate(). Per-token tensors other than input_ids / attention_mask
    (token type ids) get 0 for the new tokens; image tensors are unchanged, since the new tokens are text."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    per_token = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.shape == ids.shape]
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in per_token}
    for i, new in enumerate(tokens):
        keep = mask[i].bool()
        extra = torch.tensor(new, dtype=ids.dtype)
        for k in per_token:
            value = batch[k][i][keep]
            tail = extra if k == "input_ids" else torch.full((len(new),), 1 if k == "attention_mask" else 0,
                                                                dtype=value.dtype)
            rows[k].append(torch.cat([value, tail]))
    width = max(len(r) for r in rows["input_ids"])
    for k in per_token:
        fill = pad_id if k == "input_ids" else 0
        batch[k] = torch.stack([torch.cat([torch.full((width - len(r),), fill, dtype=r.dtype), r]) for r in rows[k]])
    return batch


def set_cpu_threads(threads: int | None) -> None:
    """torch's intra-op threads on CPU: `threads`, or the measured default (`DEFAULT_CPU_THREADS`, at most the
    cores there are). 0 keeps torch's own choice (one per core)."""
    if threads == 0:
        return
    wanted = threads or DEFAULT_CPU_THREADS
    torch.set_num_threads(max(1, min(wanted, os.cpu_count() or 1)))


def _as_set(value: int | list[int] | None) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, (list, tuple)) else {value}


def quantization_config(bits: int, compute_dtype: torch.dtype, model: str, trust_remote_code: bool = False):
    """bitsandbytes NF4 (double-quantized) or int8, leaving the vision tower, projector and lm_head unquantized."""
    from transformers import AutoConfig, BitsAndBytesConfig

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    # transformers matches these from the start of a module name, so allow any prefix ("model.visual...").
    skip = [f".*{name}" for name in quirks_for(config.model_type).vision_modules] + ["lm_head"]
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                                  bnb_4bit_use_double_quant=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def check_adapter(adapter: str, model: str, loaded: torch.nn.Module) -> None:
    """Refuse an adapter trained on another architecture, or one whose target modules this model lacks (peft would
    drop those LoRA weights without a word); warn when it was trained on another base of the same architecture."""
    import re

    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    trained_on = config.get("base_model_name_or_path") or ""
    trained_type = None
    if trained_on and (Path(trained_on) / "config.json").is_file():
        trained_type = json.loads((Path(trained_on) / "config.json").read_text(encoding="utf-8")).get("model_type")
    here = loaded.config.model_type
    if trained_type and trained_type != here:
        raise ModelLoadError(f"the adapter {adapter} was trained on a {trained_type} model ({trained_on}), not on "
                             f"this {here} model {model}; pass the --model it was trained on")
    names = [name for name, _ in loaded.named_modules()]
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # a regex, matched against full module names
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:  # peft's rule: a name matches a target equal to it or ending in ".target"
        ends = {n.split(".", i)[-1] for n in names for i in range(n.count(".") + 1)}
        missing = [t for t in targets if t not in ends]
    if missing:
        raise ModelLoadError(f"the adapter {adapter} targets {len(missing)} module(s) that {model} ({here}) does not "
                             f"have, e.g. {missing[0]!r}; it was trained on another base ({trained_on or 'unknown'})")
    same = trained_on and (trained_on == model or (Path(trained_on).exists() and Path(model).exists()
                                                   and Path(trained_on).resolve() == Path(model).resolve()))
    if trained_on and not same:
        log.warning("the adapter %s was trained on %s, not on %s (same %s architecture): answers may differ from "
                    "the trained ones", adapter, trained_on, model, here)


@contextlib.contextmanager
def peft_quiet() -> Iterator[None]:
    """peft 0.21 still calls transformers 5's deprecated `is_gradient_checkpointing` / `gradient_checkpointing_enable`
    aliases, which print a FutureWarning on every adapter load; silence exactly those two."""
    with warnings.catch_warnings():
        for name in ("is_gradient_checkpointing", "gradient_checkpointing_enable"):
            warnings.filterwarnings("ignore", message=f"`{name}` is deprecated", category=FutureWarning)
        yield


def _load(model: str, adapter: str | None, quant: int | None, device: torch.device, dtype: torch.dtype,
          trust_remote_code: bool):
    path = Path(model)
    if (path.is_absolute() or model.startswith(".")) and not path.exists():
        raise ModelLoadError(
            f"model directory not found: {model}. Point --model / REMOTEGLM_MODEL at a model directory or hub name"
        )
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    try:
        if quant is not None:
            kwargs["quantization_config"] = quantization_config(quant, dtype, model, trust_remote_code)
            kwargs["device_map"] = {"": str(device)}
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        loaded = AutoModelForImageTextToText.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model '{model}': {exc}") from exc
    if quant is None:
        loaded.to(device)
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise ModelLoadError(f"no peft adapter (adapter_config.json) in {adapter}; point --adapter at one")
        check_adapter(adapter, model, loaded)
        with peft_quiet():
            loaded = PeftModel.from_pretrained(loaded, adapter)
    loaded.eval()
    return processor, loaded
