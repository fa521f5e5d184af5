"""ConversationService over a real tiny model and a real SQLite store."""

import json
import threading

import pytest

from bot.service import ConversationService, ServiceError
from model_adapter import ChatBackend, GenerationParams, ImageError, load_backend
from settings import Settings
from storage import ConversationStore

GREEDY = GenerationParams(max_new_tokens=8, do_sample=False)


@pytest.fixture(scope="module")
def backend(tiny_glm4v_dir):
    return load_backend(model=str(tiny_glm4v_dir))


def make_service(backend, tmp_path, **settings) -> ConversationService:
    settings = Settings(data_dir=tmp_path, **settings)
    return ConversationService(backend, ConversationStore.from_settings(settings), settings)


class RecordingBackend(ChatBackend):
    """Wraps the real backend and keeps every conversation it was asked to answer."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.fail_after, self.calls, self.params = inner, fail_after, [], []
        self.model_name = inner.model_name
        self.model_defaults = getattr(inner, "model_defaults", {})

    def stream(self, messages, params=None, cancel=None):
        self.calls.append(messages)
        self.params.append(params)
        for i, chunk in enumerate(self.inner.stream(messages, params, cancel)):
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError("GPU fell off the bus")
            yield chunk

    def render_prompt(self, messages):
        return self.inner.render_prompt(messages)


def test_turn_is_streamed_and_both_sides_are_stored(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    conv = service.start()
    events = list(service.send(conv.id, "这张遥感图像展现了什么场景？", image=airplane_jpg, params=GREEDY))
    kinds = [e.kind for e in events]
    assert kinds[0] == "user" and kinds[-1] == "done" and "delta" in kinds
    answer = "".join(e.text for e in events if e.kind == "delta")
    stored = service.history(conv.id)
    assert stored.title == "这张遥感图像展现了什么场景？"
    assert [m.role for m in stored.messages] == ["user", "assistant"]
    assert stored.messages[0].images and stored.messages[1].text == events[-1].text
    assert events[-1].text == answer
    assert stored.messages[1].status == "complete"
    assert stored.messages[1].completion_tokens == events[-1].completion.completion_tokens
    assert stored.messages[1].latency_ms is not None


def test_second_answer_is_generated_with_the_first_turn_in_the_prompt(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    conv = service.start()
    first = service.ask(conv.id, "这张遥感图像展现了什么场景？", image=airplane_jpg, params=GREEDY)
    events = list(service.send(conv.id, "图中有多少架飞机？", params=GREEDY))
    prompt = events[-1].completion.prompt
    assert prompt.count("<|image|>") == 1  # the image of turn one is still shown
    assert first.text
    q1 = prompt.index("这张遥感图像展现了什么场景？")
    assert q1 < prompt.index(first.text, q1) < prompt.index("图中有多少架飞机？")


def test_restart_reopens_the_database_and_continues_the_conversation(backend, tmp_path, airplane_jpg):
    before = make_service(backend, tmp_path)
    conv = before.start()
    before.ask(conv.id, "这张遥感图像展现了什么场景？", image=airplane_jpg, params=GREEDY)
    before.store.close()

    recording = RecordingBackend(backend)
    after = make_service(recording, tmp_path)  # same data_dir: same SQLite file and image folder
    assert [c.id for c in after.store.list()] == [conv.id]
    after.ask(conv.id, "图中有多少架飞机？", params=GREEDY)
    sent = recording.calls[-1]
    assert [m.role for m in sent] == ["user", "assistant", "user"]
    assert len(sent[0].images) == 1 and sent[0].images[0].size == (256, 256)
    assert len(after.history(conv.id).messages) == 4


def test_only_the_most_recent_images_are_sent(backend, tmp_path, airplane_jpg, harbor_jpg):
    recording = RecordingBackend(backend)
    service = make_service(recording, tmp_path, max_history_images=1)
    conv = service.start()
    service.ask(conv.id, "第一张", image=airplane_jpg, params=GREEDY)
    service.ask(conv.id, "第二张", image=harbor_jpg, params=GREEDY)
    sent = recording.calls[-1]
    assert [len(m.images) for m in sent] == [0, 0, 1]
    assert sent[0].text.startswith("[图像 256×256，见前文]") and sent[0].text.endswith("第一张")


def test_failure_mid_stream_keeps_partial_answer_and_the_question(backend, tmp_path, airplane_jpg):
    service = make_service(RecordingBackend(backend, fail_after=2), tmp_path)
    conv = service.start()
    events = list(service.send(conv.id, "这张遥感图像展现了什么场景？", image=airplane_jpg,
                               params=GenerationParams(max_new_tokens=30, do_sample=False)))
    assert events[-1].kind == "error" and "GPU fell off the bus" in events[-1].error
    user, answer = service.history(conv.id).messages
    assert user.text == "这张遥感图像展现了什么场景？" and user.images
    assert answer.status == "error" and answer.error == "GPU fell off the bus"
    assert answer.text == "".join(e.text for e in events if e.kind == "delta") and answer.text


def test_stop_keeps_the_partial_answer_as_interrupted(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    conv = service.start()
    cancel = threading.Event()
    stream = service.send(conv.id, "描述这张图", image=airplane_jpg, cancel=cancel,
                          params=GenerationParams(max_new_tokens=200, do_sample=False))
    seen = ""
    for event in stream:
        if event.kind == "delta":
            seen += event.text
            cancel.set()
    answer = service.history(conv.id).messages[-1]
    assert answer.status == "interrupted" and answer.text == seen and answer.completion_tokens < 200


def test_closing_the_stream_keeps_the_partial_answer(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    conv = service.start()
    stream = service.send(conv.id, "描述这张图", image=airplane_jpg,
                          params=GenerationParams(max_new_tokens=200, do_sample=False))
    next(stream), next(stream)  # user, first delta
    stream.close()  # e.g. the browser went away
    answer = service.history(conv.id).messages[-1]
    assert answer.status == "interrupted" and answer.text


@pytest.mark.parametrize("text, image, error", [
    ("", None, ServiceError), ("   ", None, ServiceError), ("x" * 100_000, None, ServiceError),
    ("这是什么？", b"not an image", ImageError), ("这是什么？", b"", ImageError),
])
def test_bad_input_is_refused_before_anything_is_stored(backend, tmp_path, airplane_jpg, text, image, error):
    service = make_service(backend, tmp_path)
    conv = service.start()
    service.ask(conv.id, "第一问", image=airplane_jpg, params=GREEDY)
    with pytest.raises(error):
        list(service.send(conv.id, text, image=image))
    assert [m.text for m in service.history(conv.id).messages][0] == "第一问"
    assert len(service.history(conv.id).messages) == 2


def test_regenerate_and_edit_last(backend, tmp_path, airplane_jpg):
    recording = RecordingBackend(backend)
    service = make_service(recording, tmp_path)
    conv = service.start()
    service.ask(conv.id, "这是什么？", image=airplane_jpg, params=GREEDY)
    list(service.regenerate(conv.id, params=GREEDY))
    assert [m.role for m in service.history(conv.id).messages] == ["user", "assistant"]
    list(service.edit_last(conv.id, "图中有飞机吗？", params=GREEDY))
    messages = service.history(conv.id).messages
    assert [m.text for m in messages][0] == "图中有飞机吗？" and messages[0].images
    assert recording.calls[-1][-1].text == "图中有飞机吗？" and len(recording.calls[-1][-1].images) == 1


def test_regenerate_samples_another_candidate_and_keeps_the_earlier_answer(backend, tmp_path, airplane_jpg):
    recording = RecordingBackend(backend)
    service = make_service(recording, tmp_path)
    conv = service.start(settings={"temperature": 0.0, "max_new_tokens": 12})  # the mini's greedy default
    first = service.ask(conv.id, "这是什么？", image=airplane_jpg)
    assert service.effective_params(service.history(conv.id), None).temperature == 0.0
    candidates = {first.text}
    for _ in range(3):
        events = list(service.regenerate(conv.id))
        assert events[-1].kind == "done" and events[-1].status == "complete"
        candidates.add(events[-1].text)
        params = recording.params[-1]
        assert (params.temperature, params.top_p, params.do_sample) == (0.8, 0.9, True)
    assert len(candidates) > 1, "sampling at 0.8 / 0.9 should not repeat the greedy answer every time"
    view = service.history(conv.id)
    assert [m.role for m in view.messages] == ["user", "assistant"]
    question, current = view.messages
    assert [a.text for a in question.alternatives][0] == first.text and len(question.alternatives) == 3
    assert current.text not in {a.text for a in question.alternatives}  # a repeated candidate is sampled again
    assert current.text == events[-1].text and all(a.question == "这是什么？" for a in question.alternatives)
    assert service.history(conv.id).settings["temperature"] == 0.0  # the conversation's own setting is untouched
    # a temperature the user chose is kept, and so is a top_p above the minimum
    list(service.regenerate(conv.id, params=GenerationParams(temperature=0.3, top_p=0.95)))
    assert (recording.params[-1].temperature, recording.params[-1].top_p) == (0.3, 0.95)


def test_edit_keeps_the_earlier_answer_with_the_question_it_answered(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    conv = service.start()
    old = service.ask(conv.id, "这是什么？", image=airplane_jpg, params=GREEDY)
    list(service.edit_last(conv.id, "图中有飞机吗？", params=GREEDY))
    question = service.history(conv.id).messages[0]
    assert question.text == "图中有飞机吗？"
    assert [(a.question, a.text) for a in question.alternatives] == [("这是什么？", old.text)]
    assert "这是什么？" in service.export(conv.id, "md")
    earlier = json.loads(service.export(conv.id, "json"))["messages"][0]["earlier_answers"]
    assert [(e["question"], e["text"]) for e in earlier] == [("这是什么？", old.text)]


def test_generation_settings_are_remembered_per_conversation(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    conv = service.start()
    service.set_generation(conv.id, temperature=0.0, max_new_tokens=3, unknown="ignored")
    assert service.history(conv.id).settings == {"temperature": 0.0, "max_new_tokens": 3}
    answer = service.ask(conv.id, "这是什么？", image=airplane_jpg)
    assert answer.completion_tokens <= 3


def test_list_rename_delete_and_export_through_the_service(backend, tmp_path, airplane_jpg):
    service = make_service(backend, tmp_path)
    older, newer = service.start(title="旧"), service.start(title="新")
    service.ask(older.id, "这是什么？", image=airplane_jpg, params=GREEDY)  # activity moves it to the top
    assert [c.id for c in service.conversations()] == [older.id, newer.id]
    service.rename(newer.id, "港口")
    assert service.history(newer.id).title == "港口"
    markdown, data = service.export(older.id, "md"), service.export(older.id, "json")
    assert markdown.startswith("# 旧") and "这是什么？" in markdown and '"role": "assistant"' in data
    service.delete(older.id)
    assert [c.id for c in service.conversations()] == [newer.id]


def test_exists_reads_another_users_conversation_as_missing(backend, tmp_path):
    service = make_service(backend, tmp_path)
    alices = service.start(owner="alice")
    assert service.exists(alices.id) and service.exists(alices.id, "alice")  # no login (None): any conversation
    assert not service.exists(alices.id, "bob")
    assert not service.exists("no-such-id") and not service.exists(None)
