"""The web chat's event handlers: plain functions over message-format history that call
`bot.service.ConversationService` (no model code, no layout here; `ui/web.py` lays the page out and wires these to
its events). Each returns or yields a named result (`ui/outputs.py`).

Bad input (not an image, corrupt, empty, too large, empty or overlong question) becomes an assistant bubble with
the core's bilingual message; nothing is stored for it and nothing stored is lost.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import gradio as gr

from bot.service import ConversationService, ImageError, NotFound, ServiceError, StorageError, TurnEvent
from settings import ORIGINAL_GENERATION_DEFAULTS, Settings
from ui.chat_view import conversation_choices, error_bubble, export_filename, queued_bubble, thinking_bubble, to_chatbot
from ui.i18n import t
from ui.outputs import AfterTurnOutputs, ChatOutputs, EditOutputs, OpenOutputs, QueueOutputs
from ui.panes import thumbnail_css

log = logging.getLogger(__name__)

SIDEBAR_LIMIT = 100
EMPTY_INPUT = {"text": "", "files": []}
STOP_SETTLE_S = 5.0


class UploadError(ValueError):
    """The uploaded file cannot be used as given (too large); the message is for the user."""


USER_ERRORS = (ServiceError, ImageError, NotFound, UploadError, StorageError)


def request_session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def request_owner(request: gr.Request | None) -> str | None:
    """The logged-in user (Gradio's login), whose conversations alone this request sees; None without a login."""
    return getattr(request, "username", None) or None


class ChatHandlers:
    """Event handlers of the web chat; each is a plain function that tests can call without a browser."""

    def __init__(self, service: ConversationService, settings: Settings, export_dir: Path | None = None):
        self.service = service
        self.settings = settings
        self.export_dir = Path(export_dir or tempfile.mkdtemp(prefix="remoteglm-export-"))
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self._cancels: dict[str, threading.Event] = {}
        # Questions a browser session sent while an answer was streaming, in order: shown as queued bubbles until
        # Gradio's queue runs their `submit` (trigger_mode="multiple"), so nothing typed is ever dropped.
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._queries: dict[str, str] = {}  # each tab's history search
        self._thumbs_sent: dict[str, tuple[tuple[str, str], ...]] = {}  # per tab: the thumbnails it has
        self._lock = threading.Lock()

    # --- generation settings ----------------------------------------------------------------------------------
    def default_generation(self) -> dict[str, float | int]:
        """What the sliders show for a new conversation: explicit settings, else the model's, else the original's."""
        model_defaults = getattr(self.service.backend, "model_defaults", {}) or {}

        def pick(name: str) -> float:
            value = getattr(self.settings, name)
            return value if value is not None else model_defaults.get(name, ORIGINAL_GENERATION_DEFAULTS[name])

        return {"temperature": pick("temperature"), "top_p": pick("top_p"),
                "max_new_tokens": self.settings.max_new_tokens}

    def generation_of(self, conversation_id: str | None, owner: str | None = None) -> tuple[float, float, int]:
        values = self.default_generation()
        if conversation_id:
            try:
                values.update({k: v for k, v in self.service.history(conversation_id, owner).settings.items()
                               if k in values})
            except NotFound:
                pass
        return values["temperature"], values["top_p"], int(values["max_new_tokens"])

    @staticmethod
    def _generation(temperature: float | None, top_p: float | None, max_new_tokens: float | None) -> dict[str, Any]:
        return {"temperature": temperature, "top_p": top_p,
                "max_new_tokens": int(max_new_tokens) if max_new_tokens else None}

    def remember(self, conversation_id: str | None, temperature: float, top_p: float, max_new_tokens: float,
                 request: gr.Request = None) -> None:
        """Slider released: store the values with the conversation (a new one gets them when it starts)."""
        if conversation_id:
            try:
                self.service.set_generation(conversation_id, request_owner(request),
                                            **self._generation(temperature, top_p, max_new_tokens))
            except NotFound:
                pass

    # --- sidebar ------------------------------------------------------------------------------------------------------
    def sidebar(self, lang: str, selected: str | None, select: bool = True, session: str | None = None,
                owner: str | None = None) -> dict[str, Any]:
        """The conversation list, newest first, filtered by this tab's search. select=False leaves the selection
        as the browser has it (after a turn in the open conversation), so a tab's selection is never reset under
        the user's pointer."""
        query = self._queries.get(session, "") if session else ""
        choices = conversation_choices(
            self.service.conversations(limit=SIDEBAR_LIMIT, query=query, owner=owner), lang)
        if not select:
            return gr.update(choices=choices)
        return gr.update(choices=choices, value=selected if selected in {c[1] for c in choices} else None)

    def thumbnails(self, request: gr.Request = None) -> Any:
        """The sidebar's thumbnails as one `<style>` (the first image of each listed conversation, made once per
        image); skipped when this tab already has exactly these, so a turn costs nothing here."""
        listed = [c.id for c in self.service.conversations(limit=SIDEBAR_LIMIT, owner=request_owner(request))]
        found = self.service.thumbnails(listed)
        signature = tuple((cid, found[cid][0]) for cid in listed if cid in found)
        session = request_session(request)
        with self._lock:
            if self._thumbs_sent.get(session) == signature:
                return gr.skip()
            self._thumbs_sent[session] = signature
        return thumbnail_css({cid: data for cid, (_, data) in found.items()})

    def on_load(self, lang: str, request: gr.Request = None) -> dict[str, Any]:
        with self._lock:
            self._queries.pop(request_session(request), None)
            self._thumbs_sent.pop(request_session(request), None)
        return self.sidebar(lang, None, owner=request_owner(request))

    def search(self, query: str, lang: str, selected: str | None, request: gr.Request = None) -> dict[str, Any]:
        """Filter this tab's history by words in titles and messages (questions and answers); empty: all."""
        session = request_session(request)
        with self._lock:
            self._queries[session] = (query or "").strip()
        return self.sidebar(lang, selected, session=session, owner=request_owner(request))

    def open(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> OpenOutputs:
        """Show a stored conversation exactly as stored (images included) and its generation settings."""
        if not conversation_id:
            return self.new(lang, request)
        owner = request_owner(request)
        try:
            view = self.service.history(conversation_id, owner)
        except NotFound:
            return self.new(lang, request)
        temperature, top_p, max_new = self.generation_of(conversation_id, owner)
        return OpenOutputs(chatbot=self._chat(view, lang, owner), conversation=view.id, editing=False, title=view.title,
                           temperature=temperature, top_p=top_p, max_new_tokens=max_new,
                           confirm=gr.update(visible=False),
                           sidebar=self.sidebar(lang, view.id, session=request_session(request), owner=owner), id_box=view.id)

    def new(self, lang: str, request: gr.Request = None) -> OpenOutputs:
        temperature, top_p, max_new = self.generation_of(None)
        return OpenOutputs(chatbot=[], conversation=None, editing=False, title="", temperature=temperature,
                           top_p=top_p, max_new_tokens=max_new, confirm=gr.update(visible=False),
                           sidebar=self.sidebar(lang, None, session=request_session(request), owner=request_owner(request)),
                           id_box="")

    def rename(self, conversation_id: str | None, title: str, lang: str, request: gr.Request = None) -> dict[str, Any]:
        if conversation_id and title.strip():
            try:
                self.service.rename(conversation_id, title, owner=request_owner(request))
            except NotFound:
                pass
        return self.sidebar(lang, conversation_id, session=request_session(request), owner=request_owner(request))

    def ask_delete(self, conversation_id: str | None) -> dict[str, Any]:
        return gr.update(visible=bool(conversation_id))

    def cancel_delete(self) -> dict[str, Any]:
        return gr.update(visible=False)

    def delete(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> OpenOutputs:
        if conversation_id:
            try:
                self.service.delete(conversation_id, owner=request_owner(request))
            except NotFound:
                pass
        return self.new(lang, request)

    # --- export ---------------------------------------------------------------------------------------------------
    def export(self, conversation_id: str | None, fmt: str, lang: str, request: gr.Request = None) -> dict[str, Any]:
        owner = request_owner(request)
        if not conversation_id or not self._exists(conversation_id, owner):
            gr.Warning(t(lang, "no_conversation"))
            return gr.update(visible=False)
        path = self.export_dir / export_filename(self.service.history(conversation_id, owner), fmt)
        path.write_text(self.service.export(conversation_id, fmt, owner=owner), encoding="utf-8")
        return gr.update(value=str(path), visible=True)

    # --- turns ----------------------------------------------------------------------------------------------------
    def enqueue(self, message: dict[str, Any] | None, lang: str, request: gr.Request = None) -> QueueOutputs:
        """Enter pressed (runs at once, before the queued `submit`): take the question out of the box into this
        tab's queue and, if an answer is still streaming, show it as queued; `submit` answers it when its turn
        comes. (Gradio reads the box for `submit` after this emptied it, so the queue is what carries it.)"""
        message = {"text": (message or {}).get("text") or "", "files": list((message or {}).get("files") or [])}
        if not message["text"].strip() and not message["files"]:
            return QueueOutputs(textbox=gr.skip(), notice="")
        session = request_session(request)
        with self._lock:
            busy = session in self._cancels or bool(self._pending.get(session))
            self._pending.setdefault(session, []).append(message)
        return QueueOutputs(textbox=EMPTY_INPUT, notice=t(lang, "queued") if busy else "")

    def submit(
        self, message: dict[str, Any] | None, conversation_id: str | None, editing: bool, lang: str,
        temperature: float, top_p: float, max_new_tokens: float, bands: str | None = None,
        request: gr.Request = None,
    ) -> Iterator[ChatOutputs]:
        """Send the question (and image) of the input box, or the edited last question, and stream the answer.
        `bands` ("4,3,2") picks which bands of a multi-band TIFF are shown; empty: the file's R, G, B, else 1-2-3."""
        session, owner = request_session(request), request_owner(request)
        # A browser's question comes from this tab's queue (`enqueue` emptied the box before Gradio read it for
        # this event); API clients, which have no queue, pass it directly.
        message = self._next_pending(session) or message or {}
        text = message.get("text") or ""
        files = list(message.get("files") or [])
        generation = self._generation(temperature, top_p, max_new_tokens)
        created = None
        try:
            image, name = self._read_upload(files, lang)
            if not text.strip() and image is None:
                raise ServiceError("请输入问题或上传图像 (please type a question or upload an image)")
            if image is None and not self._has_image(conversation_id, owner):
                # An image question without an image would be answered with an invented scene: ask for one
                # (the model is taught the same, but the chat must not depend on it). Nothing is stored.
                raise UploadError(t(lang, "need_image"))
            if editing and self._exists(conversation_id, owner) and image is None:  # a new image: a new question
                self.service.set_generation(conversation_id, owner, **generation)
                def turn(cancel): return self.service.edit_last(conversation_id, text, cancel=cancel,  # noqa: E306
                                                                owner=owner)
            else:
                if not self._exists(conversation_id, owner):
                    conversation_id = created = self.service.start(settings=generation, owner=owner).id
                else:
                    self.service.set_generation(conversation_id, owner, **generation)
                def turn(cancel): return self.service.send(conversation_id, text, image=image,  # noqa: E306
                                                           image_name=name, cancel=cancel, bands=bands or None,
                                                           owner=owner)
            history, first = None, True
            # The input box is never written while streaming: it may already hold the user's next question.
            # (`enqueue` emptied it when Enter was pressed; API clients get an empty box once, with the first update.)
            for history in self._stream(conversation_id, turn, lang, session, owner):
                sidebar = (self.sidebar(lang, conversation_id, select=bool(created), session=session, owner=owner)
                           if first else gr.skip())
                yield ChatOutputs(chatbot=history, textbox=EMPTY_INPUT if first else gr.skip(),
                                  conversation=conversation_id, editing=False, sidebar=sidebar, id_box=conversation_id)
                first = False
            # the last update carries everything, so API clients' final result is the whole stored conversation
            yield ChatOutputs(chatbot=history, textbox=gr.skip(), conversation=conversation_id, editing=False,
                              sidebar=self.sidebar(lang, conversation_id, select=False, session=session, owner=owner),
                              id_box=conversation_id)
        except USER_ERRORS as exc:
            if created and not self.service.history(created).messages:
                self.service.delete(created)  # an unusable first turn leaves no empty conversation behind
                conversation_id = None
            # the question goes back into the box so the user can fix it
            yield ChatOutputs(chatbot=self._with_error(conversation_id, str(exc), lang, session, owner),
                              textbox={"text": text, "files": files}, conversation=conversation_id, editing=editing,
                              sidebar=gr.skip(), id_box=conversation_id or "")
        except Exception:  # noqa: BLE001 - the user gets a message, the log gets the traceback
            log.exception("web chat turn failed")
            error = self._with_error(conversation_id, t(lang, "internal_error"), lang, session, owner)
            yield ChatOutputs(chatbot=error, textbox={"text": text, "files": files}, conversation=conversation_id,
                              editing=editing, sidebar=gr.skip(), id_box=conversation_id or "")

    def regenerate(
        self, conversation_id: str | None, lang: str, temperature: float, top_p: float, max_new_tokens: float,
        request: gr.Request = None,
    ) -> Iterator[ChatOutputs]:
        """Answer the last question again with another (sampled) candidate; the previous answer stays above it as
        a collapsed "earlier answer" bubble (stored, and in the export). See `ConversationService.regenerate`."""
        owner = request_owner(request)
        try:
            if not conversation_id or not self._exists(conversation_id, owner):
                raise ServiceError(t(lang, "no_conversation"))
            self.service.set_generation(conversation_id, owner, **self._generation(temperature, top_p, max_new_tokens))
            history = None
            for history in self._stream(conversation_id, lambda cancel: self.service.regenerate(
                    conversation_id, cancel=cancel, owner=owner), lang, request_session(request), owner):
                yield ChatOutputs(chatbot=history, textbox=gr.skip(), conversation=conversation_id, editing=False,
                                  sidebar=gr.skip(), id_box=gr.skip())
            yield ChatOutputs(chatbot=history, textbox=gr.skip(), conversation=conversation_id, editing=False,
                              sidebar=self.sidebar(lang, conversation_id, select=False, session=request_session(request),
                                                   owner=owner),
                              id_box=conversation_id)
        except USER_ERRORS as exc:
            yield ChatOutputs(chatbot=self._with_error(conversation_id, str(exc), lang, owner=owner), textbox=gr.skip(),
                              conversation=conversation_id, editing=False, sidebar=gr.skip(), id_box=gr.skip())
        except Exception:  # noqa: BLE001
            log.exception("regenerate failed")
            yield ChatOutputs(chatbot=self._with_error(conversation_id, t(lang, "internal_error"), lang, owner=owner),
                              textbox=gr.skip(), conversation=conversation_id, editing=False, sidebar=gr.skip(),
                              id_box=gr.skip())

    def start_edit(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> EditOutputs:
        """Put the last question into the input box; the next submit replaces it and answers anew."""
        owner = request_owner(request)
        if conversation_id and self._exists(conversation_id, owner):
            users = [m for m in self.service.history(conversation_id, owner).messages if m.role == "user"]
            if users:
                return EditOutputs(textbox={"text": users[-1].text, "files": []}, editing=True,
                                   notice=t(lang, "editing"))
        return EditOutputs(textbox=gr.skip(), editing=False, notice=t(lang, "no_conversation"))

    def after_turn(self, conversation_id: str | None, request: gr.Request = None) -> AfterTurnOutputs:
        """Clear the editing notice; show the (possibly new) conversation's title in the rename box."""
        if not self._exists(conversation_id, request_owner(request)):
            return AfterTurnOutputs(notice="", title=gr.skip())
        return AfterTurnOutputs(notice="", title=self.service.history(conversation_id, request_owner(request)).title)

    def stop(self, request: gr.Request = None) -> None:
        """Stop this browser session's running answer; the service keeps the partial text as 'interrupted'."""
        with self._lock:
            event = self._cancels.get(request_session(request))
        if event is not None:
            event.set()

    def refresh(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> Any:
        """The stored conversation, once its last answer has settled (after stop)."""
        owner = request_owner(request)
        if not self._exists(conversation_id, owner):
            return gr.skip()
        deadline = time.monotonic() + STOP_SETTLE_S
        view = self.service.history(conversation_id, owner)
        while view.messages and view.messages[-1].status == "streaming" and time.monotonic() < deadline:
            time.sleep(0.05)
            view = self.service.history(conversation_id, owner)
        return self._chat(view, lang, owner)

    # --- internals ------------------------------------------------------------------------------------------------
    def _stream(self, conversation_id: str, turn: Callable[[threading.Event], Iterator[TurnEvent]], lang: str,
                session: str, owner: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Run one turn, yielding the whole history after each new piece of the answer."""
        cancel = threading.Event()
        with self._lock:
            self._cancels[session] = cancel
        try:
            history: list[dict[str, Any]] | None = None
            answer = ""
            # closing(): when Gradio cancels us (stop, tab closed) the service's generator is closed at once, which
            # stops generation and stores the partial answer as 'interrupted'.
            with closing(turn(cancel)) as events:
                for event in events:
                    if event.kind in ("done", "error"):
                        history = self._chat(self.service.history(conversation_id, owner), lang, owner)
                        yield history + self._queued_bubbles(session, lang)
                        continue
                    if event.kind == "restart":  # regenerate dropped a duplicate candidate and samples again
                        history, answer = None, ""
                        continue
                    if history is None:  # first event: the user's turn and the empty answer are stored
                        view = self.service.history(conversation_id, owner)
                        view.messages = [m for m in view.messages if m.id != event.message_id or m.role != "assistant"]
                        history = self._chat(view, lang, owner) + [thinking_bubble(lang)]
                    if event.kind == "delta":
                        answer += event.text
                        history[-1] = {"role": "assistant", "content": answer}
                    yield history + self._queued_bubbles(session, lang)  # a new list: callers may keep every update
        finally:
            with self._lock:
                if self._cancels.get(session) is cancel:
                    del self._cancels[session]

    def _next_pending(self, session: str) -> dict[str, Any] | None:
        """The oldest question this tab queued, taken out of the queue (its turn has come)."""
        with self._lock:
            queued = self._pending.get(session)
            if not queued:
                return None
            message = queued.pop(0)
            if not queued:
                del self._pending[session]
            return message

    def _queued_bubbles(self, session: str, lang: str) -> list[dict[str, Any]]:
        with self._lock:
            queued = list(self._pending.get(session, []))
        return [queued_bubble(item["text"], item["files"], lang) for item in queued]

    def _read_upload(self, files: list[Any], lang: str) -> tuple[bytes | None, str | None]:
        if not files:
            return None, None
        first = files[0]
        path = Path(first["path"] if isinstance(first, dict) else first)
        size_mb = path.stat().st_size / (1024 * 1024)
        if size_mb > self.settings.max_upload_mb:
            raise UploadError(t(lang, "too_big", size=size_mb, limit=self.settings.max_upload_mb))
        return path.read_bytes(), path.name

    def _has_image(self, conversation_id: str | None, owner: str | None = None) -> bool:
        return self._exists(conversation_id, owner) and any(
            m.images for m in self.service.history(conversation_id, owner).messages)

    def _exists(self, conversation_id: str | None, owner: str | None = None) -> bool:
        """The conversation is stored and (with a login) this user's: another user's reads as missing."""
        if not conversation_id:
            return False
        return self.service.exists(conversation_id, owner)

    def _with_error(self, conversation_id: str | None, text: str, lang: str,
                    session: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        view = self.service.history(conversation_id, owner) if self._exists(conversation_id, owner) else None
        queued = self._queued_bubbles(session, lang) if session else []
        return self._chat(view, lang, owner) + [error_bubble(text)] + queued

    @staticmethod
    def _chat(view, lang: str, owner: str | None) -> list[dict[str, Any]]:
        """The chatbot's value for a conversation already checked to be `owner`'s. (Gradio serves each image as a
        copy in its upload cache, under a name only the content gives; the image directory itself is never served,
        see `PrivateFiles`.)"""
        return to_chatbot(view, lang)
