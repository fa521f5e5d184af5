"""Dynamic batching in the transformers backend: concurrent requests share a batch and get the one-by-one answers,
a cancelled request leaves the others intact, a full queue refuses new requests and loses none already taken."""

import threading
import time

import pytest

from model_adapter import BackendBusy, ChatMessage, GenerationParams, load_backend, load_image

GREEDY = GenerationParams(max_new_tokens=12, do_sample=False)
QUESTIONS = ["这张遥感图像展现了什么场景？", "图中有多少架飞机？", "Describe the image.", "有没有道路？", "你好"]


@pytest.fixture(scope="module")
def images(airplane_jpg, harbor_jpg):
    return [load_image(airplane_jpg), load_image(harbor_jpg)]


def _conversations(images):
    # Different lengths (left padding), with and without images, one with two turns on the same image.
    convs = [[ChatMessage("user", q, [images[i % 2]] if i < 4 else [])] for i, q in enumerate(QUESTIONS)]
    convs.append([ChatMessage("user", QUESTIONS[0], [images[0]]), ChatMessage("assistant", "一个机场。"),
                  ChatMessage("user", QUESTIONS[1])])
    return convs


class Gate:
    """Holds the scheduler's next batch until opened, so that the requests sent meanwhile provably wait together."""

    def __init__(self, backend):
        self.opened = threading.Event()
        self.run = backend.scheduler.run_batch
        backend.scheduler.run_batch = self

    def __call__(self, requests):
        self.opened.wait(timeout=60)
        self.run(requests)


def _wait(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {condition.__code__.co_firstlineno}"
        time.sleep(0.01)


def _in_threads(fns):
    results, errors = [None] * len(fns), []

    def call(i):
        try:
            results[i] = fns[i]()
        except Exception as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(fns))]
    [t.start() for t in threads]
    return threads, results, errors


@pytest.mark.parametrize("join", [True, False], ids=["joining", "next-batch"])
def test_concurrent_requests_share_a_batch_and_equal_one_by_one_answers(model_dir, images, join):
    """The first request runs alone; the others arrive while it runs and either join its batch after a few steps
    (the running row's prompt plus its tokens so far prefilled again) or wait for the next batch. Either way each
    answer is the one it gets alone."""
    convs = _conversations(images)
    backend = load_backend(model=str(model_dir), image_cache_mb=0)
    backend.scheduler.join = join
    expected = [backend.generate(c, GREEDY) for c in convs]
    assert backend.scheduler.largest_batch == 1 and backend.scheduler.joins == 0

    gate = Gate(backend)
    batches = backend.scheduler.batches
    first, first_results, first_errors = _in_threads([lambda: list(backend.stream(convs[0], GREEDY))])
    _wait(lambda: backend.scheduler.batches == batches + 1)  # the gated batch holds the first request alone
    threads, results, errors = _in_threads([
        (lambda c=c, i=i: "".join(ch.text for ch in backend.stream(c, GREEDY)) if i % 2 else backend.generate(c, GREEDY).text)
        for i, c in enumerate(convs[1:], start=1)
    ])
    _wait(lambda: backend.scheduler.waiting == len(convs) - 1)  # the rest wait together for the next batch
    gate.opened.set()
    [t.join(timeout=120) for t in first + threads]
    assert not errors and not first_errors
    assert "".join(ch.text for ch in first_results[0]) == expected[0].text
    final = first_results[0][-1].completion
    assert (final.prompt_tokens, final.completion_tokens) == (expected[0].prompt_tokens, expected[0].completion_tokens)
    assert results == [e.text for e in expected[1:]]
    if join:  # the first row went on in one batch with all the others
        assert backend.scheduler.joins == 1 and backend.scheduler.largest_batch == len(convs)
    else:
        assert backend.scheduler.joins == 0 and backend.scheduler.largest_batch == len(convs) - 1


def test_a_cancelled_request_leaves_the_rest_of_its_batch_intact(tiny_glm4v_dir, images):
    long = GenerationParams(max_new_tokens=40, do_sample=False)
    backend = load_backend(model=str(tiny_glm4v_dir))
    backend.model.generation_config.min_new_tokens = 40  # no early end token: the cancel must be what ends it
    convs = _conversations(images)[:4]
    expected = [backend.generate(c, long).text for c in convs]

    gate = Gate(backend)
    cancel = threading.Event()
    streams = [backend.stream(c, long, cancel=cancel if i == 1 else None) for i, c in enumerate(convs)]
    threads, results, errors = _in_threads([lambda s=s: list(s) for s in streams])
    _wait(lambda: backend.scheduler.waiting + backend.scheduler.running == len(convs))
    cancel.set()  # before the batch even starts: this row stops at once, the others are computed as usual
    gate.opened.set()
    [t.join(timeout=120) for t in threads]
    assert not errors
    texts = ["".join(c.text for c in chunks) for chunks in results]
    finals = [chunks[-1].completion for chunks in results]
    assert finals[1].finish_reason == "cancelled" and finals[1].completion_tokens < 40
    assert expected[1].startswith(texts[1])
    for i in (0, 2, 3):
        assert texts[i] == expected[i] and finals[i].finish_reason == "length" and finals[i].completion_tokens == 40


def test_a_request_that_joined_a_running_batch_can_be_cancelled_alone(tiny_glm4v_dir, images):
    long = GenerationParams(max_new_tokens=40, do_sample=False)
    backend = load_backend(model=str(tiny_glm4v_dir))
    backend.model.generation_config.min_new_tokens = 40
    convs = _conversations(images)[:3]
    expected = [backend.generate(c, long).text for c in convs]

    gate = Gate(backend)
    first = backend.stream(convs[0], long)
    threads, results, errors = _in_threads([lambda: list(first)])
    _wait(lambda: backend.scheduler.running == 1)
    cancel = threading.Event()
    later = [backend.stream(convs[1], long, cancel=cancel), backend.stream(convs[2], long)]
    more, more_results, more_errors = _in_threads([lambda s=s: list(s) for s in later])
    _wait(lambda: backend.scheduler.waiting == 2)
    joined, go, run = threading.Event(), threading.Event(), gate.run

    def hold_the_joined_batch(requests):
        if len(requests) == 3:
            joined.set()
            go.wait(timeout=60)
        run(requests)

    gate.run = hold_the_joined_batch
    gate.opened.set()
    assert joined.wait(timeout=60) and backend.scheduler.joins == 1  # both joined the first request's batch
    cancel.set()
    go.set()
    [t.join(timeout=120) for t in threads + more]
    assert not errors and not more_errors
    texts = ["".join(c.text for c in chunks) for chunks in results + more_results]
    finals = [chunks[-1].completion for chunks in results + more_results]
    assert finals[1].finish_reason == "cancelled" and finals[1].completion_tokens < 40
    assert expected[1].startswith(texts[1])
    for i in (0, 2):
        assert texts[i] == expected[i] and finals[i].finish_reason == "length" and finals[i].completion_tokens == 40


def test_a_full_queue_refuses_new_requests_and_loses_none_it_took(tiny_glm4v_dir, images):
    backend = load_backend(model=str(tiny_glm4v_dir), max_batch_size=2, max_queue=2)
    convs = _conversations(images)
    expected = [backend.generate(c, GREEDY).text for c in convs[:3]]
    gate = Gate(backend)
    batches = backend.scheduler.batches
    running, first, first_errors = _in_threads([lambda: backend.generate(convs[0], GREEDY).text])
    _wait(lambda: backend.scheduler.batches == batches + 1)
    waiting, rest, errors = _in_threads([lambda c=c: backend.generate(c, GREEDY).text for c in convs[1:3]])
    _wait(lambda: backend.scheduler.waiting == 2)  # one answering, two waiting: the queue is full
    with pytest.raises(BackendBusy, match="busy") as refused:
        backend.generate(convs[3], GREEDY)
    assert "繁忙" in str(refused.value) and refused.value.retry_after > 0
    gate.opened.set()
    [t.join(timeout=120) for t in running + waiting]
    assert not errors and not first_errors and first + rest == expected  # nothing that was taken is lost
    assert backend.scheduler.largest_batch == 2
    assert backend.generate(convs[3], GREEDY).finish_reason in {"stop", "length"}  # room again afterwards
