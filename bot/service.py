"""The conversation service: the one place where a user's turn becomes a stored, streamed answer.

The web chat, the terminal chat, the API server and the agent all call it. A turn is: validate the input, store
the user's message (and image) first so it is never lost, rebuild the model's view of the history (only the most
recent `max_history_images` images are sent; older ones become a short text note), stream the answer while
keeping the stored assistant message up to date, and finish it as complete, interrupted (stop pressed: the
partial answer is kept) or error (the partial answer and the error are kept). When the model's queue is full
(`BackendBusy`) the turn is handed back whole as `ServiceBusy`: nothing of it stays stored (a regenerated or
edited turn keeps its old answer), so the caller can offer the same question again.

    service = ConversationService.from_settings(Settings())
    conv = service.start()
    for event in service.send(conv.id, "这张遥感图像展现了什么场景？", image=Path("airport.jpg").read_bytes()):
        print(event.text, end="", flush=True)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from bot.titles import conversation_title
from imagery import ImageError, ImageSource, load_image
from model_adapter import (BackendBusy, ChatBackend, ChatMessage, Completion, GenerationParams, StreamChunk,
                           load_backend)
from settings import ORIGINAL_GENERATION_DEFAULTS, Settings
from storage import ConversationStore, ConversationView, ImageRef, MessageView, NotFound, StorageError
from storage.export import EXPORTERS

# What the UIs need besides the service: the views it hands out, the errors it raises (ImageError for an unusable
# image), and `load_image` for early feedback on an image before a turn (the service checks it again).
__all__ = ["ConversationService", "ConversationView", "ImageError", "ImageRef", "MessageView", "NotFound",
           "ServiceBusy", "ServiceError", "StorageError", "TurnEvent", "load_image"]

log = logging.getLogger(__name__)

# How often a streaming answer is written back to the database (seconds); the final text is always written.
FLUSH_INTERVAL_S = 1.0
TITLE_CHARS = 30


# NOTE: measured on RemoteGLM-mini (6 answers to one scene question, examples/ucm_airplane_191.jpg and
# ucm_storagetanks_1991.jpg): temperature 0.8 with top_p 0.4 gave 1 distinct answer of 6 for both (the nucleus holds
# only the greedy answer), top_p 0.9 gave 3 and 4. So regenerate widens top_p to at least REGENERATE_MIN_TOP_P.
REGENERATE_MIN_TOP_P = 0.9
REGENERATE_TRIES = 3


def regeneration_params(params: GenerationParams, model_temperature: float | None = None) -> GenerationParams:
    """Generation settings for another candidate answer: sampling always, with top_p at least
    REGENERATE_MIN_TOP_P. Where `params` (or, unset, the model's own default `model_temperature`) would decode
    greedily, the original project's temperature 0.8 (README "Configuration") is used; a temperature the user set
    above 0 is kept."""
    temperature = params.temperature if params.temperature is not None else model_temperature
    if not temperature or params.do_sample is False:
        temperature = ORIGINAL_GENERATION_DEFAULTS["temperature"]
    top_p = max(params.top_p or ORIGINAL_GENERATION_DEFAULTS["top_p"], REGENERATE_MIN_TOP_P)
    return replace(params, temperature=temperature, top_p=top_p, do_sample=True)


class ServiceError(ValueError):
    """The request cannot be served as given (empty or too long question...); the message is for the user."""


class ServiceBusy(ServiceError):
    """The model is answering as many requests as it can take: this turn was not started and nothing of it is
    stored; ask again after `retry_after` seconds."""

    def __init__(self, retry_after: float = 1.0):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"模型繁忙，问题没有发送，请约 {seconds} 秒后重试 "
                         f"(the model is busy: your question was not sent, try again in about {seconds} s)")
        self.retry_after = retry_after


def clean_question(text: str | None, limit: int, image_given: bool = False) -> str:
    """The stripped question, or ServiceError when it is empty (and no image comes with it) or over `limit`."""
    text = (text or "").strip()
    if not text and not image_given:
        raise ServiceError("请输入问题或上传图像 (please type a question or upload an image)")
    if len(text) > limit:
        raise ServiceError(f"问题过长（{len(text)} 字），上限为 {limit} 字 "
                           f"(question too long: {len(text)} characters, limit {limit})")
    return text


@dataclass
class TurnEvent:
    """One step of a turn, for whoever displays it.

    kind: 'user' (the user's message is stored), 'delta' (new answer text in `text`), 'done' (the answer is
    stored; `text` is the whole answer), 'error' (generation failed; `error` says why, partial text kept) or
    'restart' (regenerate only: the candidate streamed so far repeated an earlier answer and was dropped; the next
    deltas are a new candidate's)."""

    kind: Literal["user", "delta", "done", "error", "restart"]
    conversation_id: str
    message_id: int
    text: str = ""
    status: str | None = None
    error: str | None = None
    completion: Completion | None = None


class ConversationService:
    def __init__(self, backend: ChatBackend, store: ConversationStore, settings: Settings | None = None):
        self.backend = backend
        self.store = store
        self.settings = settings or Settings()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationService:
        return cls(load_backend(settings), ConversationStore.from_settings(settings), settings)

    # --- conversations ------------------------------------------------------------------------------------------
    # `owner` (a user name of the web chat's login) scopes every call to that user's conversations: another
    # user's conversation id raises NotFound, like a missing one. owner=None (no login, local use): all of them.
    def start(self, title: str = "", settings: dict[str, Any] | None = None,
              owner: str | None = None) -> ConversationView:
        return self.store.create(title=title, model=self.backend.model_name, settings=settings, owner=owner)

    def history(self, conversation_id: str, owner: str | None = None) -> ConversationView:
        return self.store.get(conversation_id, owner=owner)

    def exists(self, conversation_id: str | None, owner: str | None = None) -> bool:
        """The conversation is stored and (with `owner`, a login) this user's: another user's reads as missing."""
        if not conversation_id:
            return False
        try:
            self.store.check_owner(conversation_id, owner)
            return True
        except NotFound:
            return False

    def conversations(self, limit: int = 50, offset: int = 0, query: str = "",
                      owner: str | None = None) -> list[ConversationView]:
        """Stored conversations, most recently active first (without their messages); with `query`, only those
        whose title or any message contains it; with `owner`, only that user's."""
        return self.store.list(limit=limit, offset=offset, query=query, owner=owner)

    def thumbnail(self, conversation_id: str) -> ImageRef | None:
        """The first image of a conversation, or None."""
        return self.store.first_image(conversation_id)

    def thumbnails(self, conversation_ids: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """For the history's thumbnails: conversation id -> (image sha256, small square JPEG) of its first image,
        made once per image and kept; conversations without a (readable) image are left out."""
        found = {}
        for conversation_id, ref in self.store.first_images(conversation_ids).items():
            data = self.store.thumbnail(ref)
            if data is not None:
                found[conversation_id] = (ref.sha256, data)
        return found

    def rename(self, conversation_id: str, title: str, owner: str | None = None) -> None:
        self.store.check_owner(conversation_id, owner)
        self.store.rename(conversation_id, title)

    def delete(self, conversation_id: str, owner: str | None = None) -> None:
        """Delete a conversation with its messages and the images nothing else uses (and, for an agent
        conversation, its LangGraph thread in the same database)."""
        from bot.agent_thread import STATE_KEY, delete_thread  # langgraph: imported only when it is needed

        self.store.check_owner(conversation_id, owner)
        agent = STATE_KEY in (self.store.get(conversation_id).settings or {})
        self.store.delete(conversation_id)
        if agent:
            try:
                delete_thread(self.store.engine.url.render_as_string(hide_password=False), conversation_id)
            except Exception:  # noqa: BLE001 - the conversation is gone; leftover thread rows are only space
                log.warning("could not delete the agent thread of %s", conversation_id, exc_info=True)

    def export(self, conversation_id: str, fmt: Literal["md", "json", "html"], owner: str | None = None) -> str:
        """The conversation as one self-contained Markdown, JSON or HTML text (images embedded, earlier answers
        included)."""
        if fmt not in EXPORTERS:
            raise ServiceError(f"未知的导出格式 {fmt!r} (unknown export format; one of {', '.join(EXPORTERS)})")
        return EXPORTERS[fmt](self.store.get(conversation_id, owner=owner))

    def set_generation(self, conversation_id: str, owner: str | None = None, **values: Any) -> None:
        """Remember generation settings (temperature, top_p, max_new_tokens...) for this conversation."""
        known = {f.name for f in fields(GenerationParams)}
        conv = self.store.get(conversation_id, owner=owner)
        merged = {**conv.settings, **{k: v for k, v in values.items() if k in known and v is not None}}
        self.store.update_settings(conversation_id, merged)

    # --- turns ------------------------------------------------------------------------------------------------------
    def send(
        self, conversation_id: str, text: str, image: ImageSource | ImageRef | None = None,
        params: GenerationParams | None = None, cancel: threading.Event | None = None,
        image_name: str | None = None, streaming: bool = True, bands: Sequence[int] | str | None = None,
        owner: str | None = None,
    ) -> Iterator[TurnEvent]:
        """Store the user's turn and stream the answer (with streaming=False the answer arrives as one delta).
        `bands` picks which bands of a multi-band TIFF are shown (1-based, e.g. "4,3,2"; default: R, G, B by the
        file's band names, else the first three). Raises ServiceError / ImageError before storing anything when
        the input is unusable."""
        text = clean_question(text, self.settings.max_question_chars, image_given=image is not None)
        conv = self.store.get(conversation_id, owner=owner)  # NotFound before anything is stored
        images = [] if image is None else [
            image if isinstance(image, ImageRef) else self.store.add_image(image, image_name, bands)]
        user = self.store.append_message(conversation_id, "user", text, images)
        if not conv.title:
            self.store.rename(conversation_id, text[:TITLE_CHARS] or "图像对话")
        yield TurnEvent("user", conversation_id, user.id, text)
        try:
            yield from self._answer(conversation_id, params, cancel, streaming)
        except ServiceBusy:
            # Stored first so that a crash loses nothing; taken back now, because the caller hands the question
            # back to the user (an unanswered question left here would be sent twice on the retry).
            self.store.delete_message(user.id)
            if not conv.title:
                self.store.rename(conversation_id, "")
            raise

    def ask(self, conversation_id: str, text: str, image: ImageSource | ImageRef | None = None,
            params: GenerationParams | None = None) -> MessageView:
        """Blocking turn (no token streaming, so no per-token overhead); returns the stored answer.
        Raises ServiceError if generation failed."""
        last = None
        for event in self.send(conversation_id, text, image, params, streaming=False):
            last = event
        if last is None or last.kind == "error":
            raise ServiceError(last.error if last else "no answer")
        return self.store.get(conversation_id).messages[-1]

    def regenerate(self, conversation_id: str, params: GenerationParams | None = None,
                   cancel: threading.Event | None = None, owner: str | None = None) -> Iterator[TurnEvent]:
        """Answer the last question again with another candidate: the last answer is kept among the question's
        earlier answers (`MessageView.alternatives`), and the new one is sampled (`regeneration_params`). A
        candidate identical to one the question already has is dropped and sampled again, up to
        REGENERATE_TRIES times in all: a 'restart' event says so, and the deltas that follow are the next
        candidate's."""
        conv = self.store.get(conversation_id, owner=owner)
        if not conv.messages or not any(m.role == "user" for m in conv.messages):
            raise ServiceError("没有可以重新生成的回答 (nothing to regenerate)")
        last = max(i for i, m in enumerate(conv.messages) if m.role == "user")
        view = replace(conv, messages=conv.messages[:last + 1])
        known = {a.text for a in conv.messages[last].alternatives} | {
            m.text for m in conv.messages[last + 1:] if m.role == "assistant" and m.text}
        sampling = regeneration_params(self.effective_params(conv, params), self._model_temperature())
        for attempt in range(1, REGENERATE_TRIES + 1):
            # The old answer becomes an earlier answer only once the model has taken the request: a busy model
            # leaves the conversation as it was.
            commit = (lambda: self._keep_answers_after_last_question(conv)) if attempt == 1 else None
            for event in self._answer(conversation_id, sampling, cancel, view=view, commit=commit):
                if (event.kind == "done" and event.status == "complete" and event.text in known
                        and attempt < REGENERATE_TRIES and not (cancel and cancel.is_set())):
                    self.store.delete_message(event.message_id)  # the same text is stored already
                    yield TurnEvent("restart", conversation_id, event.message_id)
                    break
                yield event
            else:
                return

    def edit_last(self, conversation_id: str, text: str, params: GenerationParams | None = None,
                  cancel: threading.Event | None = None, owner: str | None = None) -> Iterator[TurnEvent]:
        """Replace the last question's text (its image stays) and answer it anew."""
        conv = self.store.get(conversation_id, owner=owner)
        users = [m for m in conv.messages if m.role == "user"]
        if not users:
            raise ServiceError("还没有可以编辑的问题 (no question to edit yet)")
        text = clean_question(text, self.settings.max_question_chars, image_given=bool(users[-1].images))
        question = users[-1]
        kept = [replace(m, text=text) if m.id == question.id else m for m in conv.messages if m.id <= question.id]

        def commit() -> None:  # once the model has taken the request (a busy model changes nothing)
            self._keep_answers_after_last_question(conv)  # they stay reachable, with the question they answered
            self.store.update_message(question.id, text=text)

        yield from self._answer(conversation_id, params, cancel, view=replace(conv, messages=kept), commit=commit)

    # --- internals ------------------------------------------------------------------------------------------------
    def _keep_answers_after_last_question(self, conv: ConversationView) -> None:
        """The messages after the last question: answers with text become earlier answers, empty ones go."""
        last_question = max(m.id for m in conv.messages if m.role == "user")
        for message in conv.messages:
            if message.id <= last_question:
                continue
            if message.role == "assistant" and (message.text or message.error):
                self.store.keep_as_alternative(message.id)
            else:
                self.store.delete_message(message.id)

    def _model_temperature(self) -> float | None:
        """The temperature the backend uses when none is asked for (RemoteGLM-mini's generation_config: 0)."""
        return (getattr(self.backend, "model_defaults", None) or {}).get("temperature")

    def build_messages(self, conv: ConversationView) -> list[ChatMessage]:
        """The model's view of a stored conversation (failed and empty answers left out)."""
        usable = [m for m in conv.messages if m.role == "user" or (m.status != "error" and m.text)]
        keep = {ref.sha256 for ref in [r for m in usable for r in m.images][::-1][: self.settings.max_history_images]}
        messages = []
        for m in usable:
            notes = [f"[图像 {r.width}×{r.height}，见前文]" for r in m.images if r.sha256 not in keep]
            text = "\n".join(notes + [m.text]) if notes else m.text
            images = [self.store.open_image(r) for r in m.images if r.sha256 in keep]
            keep -= {r.sha256 for r in m.images}  # an image sent twice is attached only at its first place
            messages.append(ChatMessage(m.role, text, images))
        return messages

    def effective_params(self, conv: ConversationView, params: GenerationParams | None) -> GenerationParams:
        known = {f.name for f in fields(GenerationParams)}
        stored = GenerationParams(**{k: v for k, v in conv.settings.items() if k in known})
        return stored.merged(params)

    def _retitle(self, conversation_id: str) -> None:
        """After the first complete answer, an automatic title (the question) becomes scene + question, so the
        history says what each conversation is about; a title the user chose is kept."""
        conv = self.store.get(conversation_id)
        users = [m for m in conv.messages if m.role == "user"]
        answers = [m for m in conv.messages if m.role == "assistant" and m.status == "complete"]
        if len(answers) == 1 and users and conv.title == (users[0].text[:TITLE_CHARS] or "图像对话"):
            title = conversation_title(users[0].text, answers[0].text)
            if title != conv.title:
                self.store.rename(conversation_id, title)

    def _whole(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[StreamChunk]:
        completion = self.backend.generate(messages, params)
        yield StreamChunk(completion.text, completion)

    def _answer(self, conversation_id: str, params: GenerationParams | None, cancel: threading.Event | None,
                streaming: bool = True, view: ConversationView | None = None,
                commit: Callable[[], Any] | None = None) -> Iterator[TurnEvent]:
        """Answer `view` (default: the stored conversation). `commit` (the stored changes a regenerate or an edit
        makes) runs once the model has taken the request, before anything is shown; never when it was busy."""
        conv = view or self.store.get(conversation_id)
        messages = self.build_messages(conv)
        effective = self.effective_params(conv, params)
        answer = self.store.append_message(conversation_id, "assistant", "", status="streaming")
        parts: list[str] = []
        started = time.perf_counter()
        last_flush = started
        finished = False
        committed = commit is None

        def accepted() -> None:
            nonlocal committed
            if not committed:
                committed = True
                commit()

        stream: Iterator[StreamChunk] | None = None
        completion = None
        try:
            stream = self.backend.stream(messages, effective, cancel) if streaming else self._whole(messages, effective)
            for chunk in stream:
                accepted()
                if chunk.text:
                    parts.append(chunk.text)
                    yield TurnEvent("delta", conversation_id, answer.id, chunk.text)
                    if time.perf_counter() - last_flush > FLUSH_INTERVAL_S:
                        # status again: a sibling process's start-up may have marked it interrupted meanwhile
                        self.store.update_message(answer.id, text="".join(parts), status="streaming")
                        last_flush = time.perf_counter()
                completion = chunk.completion or completion
            accepted()
            status = "interrupted" if completion is None or completion.finish_reason == "cancelled" else "complete"
            text = completion.text if completion and status == "complete" else "".join(parts)
            self.store.update_message(
                answer.id, text=text, status=status,
                prompt_tokens=completion.prompt_tokens if completion else None,
                completion_tokens=completion.completion_tokens if completion else None,
                latency_ms=int((time.perf_counter() - started) * 1000),
            )
            finished = True
            if status == "complete":
                self._retitle(conversation_id)
            yield TurnEvent("done", conversation_id, answer.id, text, status=status, completion=completion)
        except Exception as exc:  # noqa: BLE001 - any backend failure must end as a stored error, not a lost turn
            if isinstance(exc, BackendBusy) and not parts and completion is None:  # refused before it started
                self.store.delete_message(answer.id)
                finished = True
                raise ServiceBusy(exc.retry_after) from exc
            accepted()
            log.exception("generation failed in conversation %s", conversation_id)
            self.store.update_message(answer.id, text="".join(parts), status="error", error=str(exc)[:2000],
                                      latency_ms=int((time.perf_counter() - started) * 1000))
            finished = True
            yield TurnEvent("error", conversation_id, answer.id, "".join(parts), status="error",
                            error=f"生成失败 (generation failed): {exc}")
        finally:
            if stream is not None:
                stream.close()  # stops generation at once when our consumer went away
            if not finished:  # the consumer closed the stream (stop button, disconnect): keep what we have
                accepted()
                self.store.update_message(answer.id, text="".join(parts), status="interrupted",
                                          latency_ms=int((time.perf_counter() - started) * 1000))
