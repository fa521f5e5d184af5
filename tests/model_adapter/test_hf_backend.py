"""The transformers backend on tiny random checkpoints of the real GLM-4V and Qwen2.5-VL architectures."""

import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText

from model_adapter import ChatMessage, GenerationParams, load_backend, load_image
from model_adapter.base import resolve_generation
from model_adapter.hf import HFBackend, ModelLoadError

GREEDY = GenerationParams(max_new_tokens=12, do_sample=False)
QUESTION = "这张遥感图像展现了什么场景？"


@pytest.fixture(scope="module")
def image(airplane_jpg):
    return load_image(airplane_jpg)


def test_loads_by_path_and_answers_with_token_counts(tiny_model_dir, image):
    backend = load_backend(model=str(tiny_model_dir))
    completion = backend.generate([ChatMessage("user", QUESTION, [image])], GREEDY)
    assert isinstance(completion.text, str)
    assert 1 <= completion.completion_tokens <= 12
    assert completion.prompt_tokens > len(QUESTION) // 4  # text plus expanded image tokens
    assert completion.finish_reason in ("stop", "length")
    assert QUESTION in completion.prompt


def test_stream_yields_the_blocking_text_under_greedy_decoding(tiny_model_dir, image):
    backend = load_backend(model=str(tiny_model_dir))
    messages = [ChatMessage("user", QUESTION, [image])]
    blocking = backend.generate(messages, GREEDY)
    chunks = list(backend.stream(messages, GREEDY))
    assert "".join(c.text for c in chunks) == blocking.text
    assert chunks[-1].completion.completion_tokens == blocking.completion_tokens
    assert sum(1 for c in chunks if c.text) >= 2  # really incremental, not one blob


def test_batch_equals_one_by_one(tiny_model_dir, image):
    backend = load_backend(model=str(tiny_model_dir))
    a = [ChatMessage("user", QUESTION, [image])]
    b = [ChatMessage("user", "图中有多少架飞机？", [image.rotate(90)])]
    batched = backend.generate_batch([a, b], GREEDY)
    assert [c.text for c in batched] == [backend.generate(a, GREEDY).text, backend.generate(b, GREEDY).text]


def test_multi_turn_prompt_contains_the_first_turn(tiny_model_dir, image):
    backend = load_backend(model=str(tiny_model_dir))
    first = backend.generate([ChatMessage("user", QUESTION, [image])], GREEDY)
    follow = [ChatMessage("user", QUESTION, [image]), ChatMessage("assistant", "机场。"),
              ChatMessage("user", "图中有多少架飞机？")]
    prompt = backend.generate(follow, GREEDY).prompt
    assert prompt.index(QUESTION) < prompt.index("机场。") < prompt.index("图中有多少架飞机？")
    assert first.prompt in prompt or prompt.startswith(first.prompt[:20])


def test_cancel_stops_generation_early(tiny_glm4v_dir, image):
    backend = load_backend(model=str(tiny_glm4v_dir))
    cancel = threading.Event()
    params = GenerationParams(max_new_tokens=200, do_sample=False)
    stream = backend.stream([ChatMessage("user", QUESTION, [image])], params, cancel)
    next(stream)
    cancel.set()
    last = list(stream)[-1].completion
    assert last.finish_reason == "cancelled"
    assert last.completion_tokens < 200


def _save_lora(model_dir, out_dir):
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                        init_lora_weights=False)  # random B: the adapter must change the output
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir


def test_lora_adapter_saved_by_peft_loads_and_changes_logits(tiny_model_dir, image, tmp_path):
    adapter = _save_lora(tiny_model_dir, tmp_path / "lora")
    plain = load_backend(model=str(tiny_model_dir))
    tuned = load_backend(model=str(tiny_model_dir), adapter=str(adapter))
    assert type(tuned.model).__name__ == "PeftModelForCausalLM" or hasattr(tuned.model, "peft_config")
    messages = [ChatMessage("user", QUESTION, [image])]
    _, inputs, _ = plain._prepare([messages], GREEDY)
    with torch.no_grad():
        base_logits = plain.model(**inputs).logits
        tuned_logits = tuned.model(**inputs).logits
    assert not torch.allclose(base_logits, tuned_logits)
    assert tuned.generate(messages, GREEDY).completion_tokens >= 1


@pytest.mark.parametrize("bits, layer", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_quantized_model_generates_on_cpu(tiny_model_dir, image, bits, layer):
    backend = load_backend(model=str(tiny_model_dir), quant=bits)
    quantized = {name for name, m in backend.model.named_modules() if type(m).__name__ == layer}
    assert any("language_model" in name for name in quantized)
    assert not any(".visual." in name for name in quantized)  # the vision tower stays in full precision
    completion = backend.generate([ChatMessage("user", QUESTION, [image])], GREEDY)
    assert completion.completion_tokens >= 1


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        HFBackend(str(tmp_path / "nope"))


def test_missing_adapter_is_a_clear_error(tiny_glm4v_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        HFBackend(str(tiny_glm4v_dir), adapter=str(tmp_path))


def test_generation_defaults_follow_the_original_project_unless_the_model_says_otherwise():
    original = resolve_generation(GenerationParams(), {}, 512, 4096)
    assert original == {"max_new_tokens": 512, "repetition_penalty": 1.2, "do_sample": True,
                        "temperature": 0.8, "top_p": 0.4, "top_k": 100}
    model_says = resolve_generation(GenerationParams(), {"temperature": 0.3, "top_k": 5}, 512, 4096)
    assert model_says["temperature"] == 0.3 and model_says["top_k"] == 5 and model_says["top_p"] == 0.4
    explicit = resolve_generation(GenerationParams(temperature=0.5, max_new_tokens=99999), {"temperature": 0.3},
                                  512, 4096)
    assert explicit["temperature"] == 0.5 and explicit["max_new_tokens"] == 4096  # bounded
    assert resolve_generation(GenerationParams(temperature=0), {}, 512, 4096)["do_sample"] is False


def test_model_generation_config_overrides_original_defaults(tiny_glm4v_dir, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(tiny_glm4v_dir)
    model.generation_config.temperature = 0.6
    model.generation_config.do_sample = True
    model.save_pretrained(tmp_path)
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        shutil.copy(tiny_glm4v_dir / name, tmp_path / name)
    backend = load_backend(model=str(tmp_path))
    assert backend.model_defaults == {"temperature": 0.6}

    model.generation_config.do_sample = False  # a checkpoint that asks for greedy decoding gets it by default
    model.generation_config.temperature = None
    model.save_pretrained(tmp_path)
    greedy = load_backend(model=str(tmp_path))
    assert greedy.model_defaults == {"temperature": 0.0}
    assert resolve_generation(GenerationParams(), greedy.model_defaults, 512, 4096)["do_sample"] is False
    assert resolve_generation(GenerationParams(temperature=0.7), greedy.model_defaults, 512, 4096)["do_sample"]


def test_concurrent_callers_each_get_their_own_answer(tiny_glm4v_dir, image):
    backend = load_backend(model=str(tiny_glm4v_dir))
    questions = [f"问题 {i}：这张遥感图像展现了什么场景？" for i in range(6)]
    expected = {q: backend.generate([ChatMessage("user", q, [image])], GREEDY).text for q in questions}
    results, errors = {}, []

    def ask(q, streaming):
        try:
            messages = [ChatMessage("user", q, [image])]
            if streaming:
                results[q] = "".join(c.text for c in backend.stream(messages, GREEDY))
            else:
                results[q] = backend.generate(messages, GREEDY).text
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(q, i % 2 == 0)) for i, q in enumerate(questions)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and results == expected
