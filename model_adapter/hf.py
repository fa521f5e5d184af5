"""Local transformers backend: any native vision-language model through AutoModelForImageTextToText.

Loads from a local directory or a hub name (the normal `from_pretrained` path), optionally quantized with
bitsandbytes (4-bit NF4 or 8-bit) and with a peft LoRA adapter on top; prompts are rendered by the model's own
chat template; architecture differences come from `registry.QUIRKS`. One request builder (`_prepare`) serves the
blocking, batched and streaming paths.

    backend = HFBackend.from_settings(Settings(model="checkpoints/remoteglm-mini"))
    backend.generate([ChatMessage("user", "这张遥感图像展现了什么场景？", [image])]).text
"""

from __future__ import annotations

import contextlib
import json
import logging
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
    TextIteratorStreamer,
)

from model_adapter.base import (
    ChatBackend,
    ChatMessage,
    Completion,
    GenerationParams,
    StreamChunk,
    resolve_generation,
)
from model_adapter.registry import quirks_for
from settings import ORIGINAL_GENERATION_DEFAULTS, Settings

log = logging.getLogger(__name__)


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


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


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
    ):
        self.model_name = Path(model).name if Path(model).exists() else model
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.max_new_tokens = max_new_tokens
        self.max_new_tokens_limit = max_new_tokens_limit
        self.processor, self.model = _load(model, adapter, quant, self.device, self.dtype, trust_remote_code)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # batched generation continues from the right edge
        self.quirks = quirks_for(self.model.config.model_type)
        own = self.model.generation_config.to_diff_dict()
        self.model_defaults = {k: own[k] for k in ORIGINAL_GENERATION_DEFAULTS if k in own}
        if own.get("do_sample") is False:  # the checkpoint asks for greedy decoding (RemoteGLM-mini does)
            self.model_defaults["temperature"] = 0.0
        self.model_defaults.update(generation_overrides or {})
        self.eos_ids = _as_set(self.model.generation_config.eos_token_id) | _as_set(self.tokenizer.eos_token_id)
        self.pad_id = self.model.generation_config.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id
        # One generate() at a time: concurrent callers (web sessions, server, agent) queue here instead of
        # doubling peak memory or racing on peft / generation state.
        self._generate_lock = threading.Lock()

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

    def _prepare(
        self, conversations: list[list[ChatMessage]], params: GenerationParams | None
    ) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        prompts = [self.render_prompt(messages) for messages in conversations]
        images = [image for messages in conversations for m in messages for image in m.images]
        batch = self.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
        wanted = self.quirks.model_inputs
        inputs = {
            name: (value.to(self.model.device, self.dtype) if value.is_floating_point() else value.to(self.model.device))
            for name, value in batch.items()
            if isinstance(value, torch.Tensor) and (wanted is None or name in wanted)
        }
        params = params or GenerationParams()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        gen_kwargs = resolve_generation(params, self.model_defaults, self.max_new_tokens, self.max_new_tokens_limit)
        gen_kwargs["pad_token_id"] = self.pad_id
        return prompts, inputs, gen_kwargs

    def _completion(self, prompt: str, row: torch.Tensor, prompt_len: int, prompt_tokens: int,
                    max_new: int, cancelled: bool) -> Completion:
        new = row[prompt_len:].tolist()
        ended = next((i for i, t in enumerate(new) if t in self.eos_ids), None)
        kept = new if ended is None else new[: ended + 1]
        if ended is not None:
            reason = "stop"
        elif len(new) >= max_new:
            reason = "length"
        else:  # neither eos nor the token budget ended it: a stop request did, or the user's cancel
            reason = "cancelled" if cancelled else "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(kept),
                          finish_reason=reason, prompt=prompt)

    # --- generation ----------------------------------------------------------------------------------------------
    def generate(self, messages: list[ChatMessage], params: GenerationParams | None = None) -> Completion:
        return self.generate_batch([messages], params)[0]

    @torch.inference_mode()
    def generate_batch(
        self, conversations: list[list[ChatMessage]], params: GenerationParams | None = None
    ) -> list[Completion]:
        prompts, inputs, gen_kwargs = self._prepare(conversations, params)
        with self._generate_lock:
            out = self.model.generate(**inputs, **gen_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            self._completion(prompts[i], out[i], prompt_len, prompt_tokens[i], gen_kwargs["max_new_tokens"], False)
            for i in range(len(prompts))
        ]

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        prompts, inputs, gen_kwargs = self._prepare([messages], params)
        cancel = cancel or threading.Event()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with self._generate_lock, torch.inference_mode():
                    result["out"] = self.model.generate(
                        **inputs, **gen_kwargs, streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                    )
            except BaseException as exc:  # re-raised in the caller's thread below
                result["error"] = exc
            finally:
                streamer.end()

        worker = threading.Thread(target=run, name="remoteglm-generate", daemon=True)
        started = time.perf_counter()
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield StreamChunk(text)
        finally:
            # Reached on normal end, on an exception, and when the consumer closes the generator early.
            if worker.is_alive():
                cancel.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        completion = self._completion(
            prompts[0], result["out"][0], inputs["input_ids"].shape[1], int(inputs["attention_mask"].sum()),
            gen_kwargs["max_new_tokens"], cancel.is_set(),
        )
        log.debug("generated %d tokens in %.2fs", completion.completion_tokens, time.perf_counter() - started)
        yield StreamChunk("", completion)


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
