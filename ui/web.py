"""The Gradio 6 web chat: upload a remote-sensing image, ask, watch the answer stream; every turn is stored.

The UI is a thin layer: `ChatHandlers` holds plain functions over message-format history that call
`bot.service.ConversationService` (no model code here), and `build_demo` lays the Blocks out and wires events.
Launching happens only in `app.py`:

    demo = build_demo(service, settings)
    demo.queue().launch(**launch_options(settings))   # what `python app.py` does

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

from bot.accounts import Accounts
from bot.service import ConversationService, ImageError, NotFound, ServiceError, StorageError, TurnEvent
from settings import ORIGINAL_GENERATION_DEFAULTS, REPO_ROOT, Settings
from ui.access import PrivateFiles, login_check
from ui.chat_view import (conversation_choices, error_bubble, example_files, export_filename, queued_bubble,
                          thinking_bubble, to_chatbot)
from ui.i18n import DEFAULT_LANG, EXAMPLE_QUESTIONS, LANGS, t
from ui.landuse import add_landuse_panel
from ui.outputs import AfterTurnOutputs, ChatOutputs, EditOutputs, OpenOutputs, QueueOutputs, outputs
from ui.panes import IMAGE_PANE_CSS, IMAGE_PANE_JS, SIDEBAR_CSS, image_pane_html, thumbnail_css

log = logging.getLogger(__name__)

EXAMPLES_DIR = REPO_ROOT / "examples"
SIDEBAR_LIMIT = 100
EMPTY_INPUT = {"text": "", "files": []}
# How many answers are generated at once, per backend. NOTE: a local model is one instance serving every browser tab;
# two generations at once on one GPU only split its memory and time, so answers queue one at a time (other tabs'
# sidebar/open/rename stay instant). A remote OpenAI-compatible server (vLLM) batches requests itself.
GENERATION_CONCURRENCY = {"hf": 1, "openai": 8}
STOP_SETTLE_S = 5.0
# Sidebar radios: long titles wrap and would shrink the circle to nothing; and Gradio 6.31's hover rule outranks
# its checked rule, so the selected conversation's circle turned blank under the mouse. (The language radio keeps
# its colour under the mouse without such a rule: measured in tests/ui/test_browser_views.py.)
CSS = """
#conversations input[type=radio] { flex-shrink: 0; }
#conversations input[type=radio]:checked:hover { background-color: var(--checkbox-background-color-selected);
  border-color: var(--checkbox-border-color-selected); }
""" + SIDEBAR_CSS + IMAGE_PANE_CSS
# Outside Gradio's CSS scoping (it prefixes `css` rules with its container): the container's overflow:hidden makes
# it a scroll box, which pins a sticky element to the container instead of the window; `clip` cuts the same
# overflow without that, so the image pane stays in view while the page scrolls.
PAGE_HEAD = "<style>.gradio-container { overflow: clip !important; }</style>"
# The pane is drawn once in the browser and keeps its zoom state, so its few words are in both languages.
IMAGE_PANE = image_pane_html("正在讨论的图像 · Image under discussion",
                             "提问时附带的图像会显示在这里：滚轮或 +/− 缩放，拖动平移，双击复原。"
                             " · The image you ask about shows here: wheel or +/− to zoom, drag to pan, double-click "
                             "to fit.")


class UploadError(ValueError):
    """The uploaded file cannot be used as given (too large); the message is for the user."""


USER_ERRORS = (ServiceError, ImageError, NotFound, UploadError, StorageError)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def _owner(request: gr.Request | None) -> str | None:
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
                self.service.set_generation(conversation_id, _owner(request),
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
        listed = [c.id for c in self.service.conversations(limit=SIDEBAR_LIMIT, owner=_owner(request))]
        found = self.service.thumbnails(listed)
        signature = tuple((cid, found[cid][0]) for cid in listed if cid in found)
        session = _session(request)
        with self._lock:
            if self._thumbs_sent.get(session) == signature:
                return gr.skip()
            self._thumbs_sent[session] = signature
        return thumbnail_css({cid: data for cid, (_, data) in found.items()})

    def on_load(self, lang: str, request: gr.Request = None) -> dict[str, Any]:
        with self._lock:
            self._queries.pop(_session(request), None)
            self._thumbs_sent.pop(_session(request), None)
        return self.sidebar(lang, None, owner=_owner(request))

    def search(self, query: str, lang: str, selected: str | None, request: gr.Request = None) -> dict[str, Any]:
        """Filter this tab's history by words in titles and messages (questions and answers); empty: all."""
        session = _session(request)
        with self._lock:
            self._queries[session] = (query or "").strip()
        return self.sidebar(lang, selected, session=session, owner=_owner(request))

    def open(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> OpenOutputs:
        """Show a stored conversation exactly as stored (images included) and its generation settings."""
        if not conversation_id:
            return self.new(lang, request)
        owner = _owner(request)
        try:
            view = self.service.history(conversation_id, owner)
        except NotFound:
            return self.new(lang, request)
        temperature, top_p, max_new = self.generation_of(conversation_id, owner)
        return OpenOutputs(chatbot=self._chat(view, lang, owner), conversation=view.id, editing=False, title=view.title,
                           temperature=temperature, top_p=top_p, max_new_tokens=max_new,
                           confirm=gr.update(visible=False),
                           sidebar=self.sidebar(lang, view.id, session=_session(request), owner=owner), id_box=view.id)

    def new(self, lang: str, request: gr.Request = None) -> OpenOutputs:
        temperature, top_p, max_new = self.generation_of(None)
        return OpenOutputs(chatbot=[], conversation=None, editing=False, title="", temperature=temperature,
                           top_p=top_p, max_new_tokens=max_new, confirm=gr.update(visible=False),
                           sidebar=self.sidebar(lang, None, session=_session(request), owner=_owner(request)),
                           id_box="")

    def rename(self, conversation_id: str | None, title: str, lang: str, request: gr.Request = None) -> dict[str, Any]:
        if conversation_id and title.strip():
            try:
                self.service.rename(conversation_id, title, owner=_owner(request))
            except NotFound:
                pass
        return self.sidebar(lang, conversation_id, session=_session(request), owner=_owner(request))

    def ask_delete(self, conversation_id: str | None) -> dict[str, Any]:
        return gr.update(visible=bool(conversation_id))

    def cancel_delete(self) -> dict[str, Any]:
        return gr.update(visible=False)

    def delete(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> OpenOutputs:
        if conversation_id:
            try:
                self.service.delete(conversation_id, owner=_owner(request))
            except NotFound:
                pass
        return self.new(lang, request)

    # --- export ---------------------------------------------------------------------------------------------------
    def export(self, conversation_id: str | None, fmt: str, lang: str, request: gr.Request = None) -> dict[str, Any]:
        owner = _owner(request)
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
        session = _session(request)
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
        session, owner = _session(request), _owner(request)
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
        owner = _owner(request)
        try:
            if not conversation_id or not self._exists(conversation_id, owner):
                raise ServiceError(t(lang, "no_conversation"))
            self.service.set_generation(conversation_id, owner, **self._generation(temperature, top_p, max_new_tokens))
            history = None
            for history in self._stream(conversation_id, lambda cancel: self.service.regenerate(
                    conversation_id, cancel=cancel, owner=owner), lang, _session(request), owner):
                yield ChatOutputs(chatbot=history, textbox=gr.skip(), conversation=conversation_id, editing=False,
                                  sidebar=gr.skip(), id_box=gr.skip())
            yield ChatOutputs(chatbot=history, textbox=gr.skip(), conversation=conversation_id, editing=False,
                              sidebar=self.sidebar(lang, conversation_id, select=False, session=_session(request),
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
        owner = _owner(request)
        if conversation_id and self._exists(conversation_id, owner):
            users = [m for m in self.service.history(conversation_id, owner).messages if m.role == "user"]
            if users:
                return EditOutputs(textbox={"text": users[-1].text, "files": []}, editing=True,
                                   notice=t(lang, "editing"))
        return EditOutputs(textbox=gr.skip(), editing=False, notice=t(lang, "no_conversation"))

    def after_turn(self, conversation_id: str | None, request: gr.Request = None) -> AfterTurnOutputs:
        """Clear the editing notice; show the (possibly new) conversation's title in the rename box."""
        if not self._exists(conversation_id, _owner(request)):
            return AfterTurnOutputs(notice="", title=gr.skip())
        return AfterTurnOutputs(notice="", title=self.service.history(conversation_id, _owner(request)).title)

    def stop(self, request: gr.Request = None) -> None:
        """Stop this browser session's running answer; the service keeps the partial text as 'interrupted'."""
        with self._lock:
            event = self._cancels.get(_session(request))
        if event is not None:
            event.set()

    def refresh(self, conversation_id: str | None, lang: str, request: gr.Request = None) -> Any:
        """The stored conversation, once its last answer has settled (after stop)."""
        owner = _owner(request)
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


# --- layout -------------------------------------------------------------------------------------------------------

def _examples(lang: str) -> list[list[dict[str, Any]]]:
    questions = EXAMPLE_QUESTIONS[lang]
    by_scene = {"airplane": 1, "harbor": 2, "storagetanks": 3}
    rows = []
    for path in example_files(EXAMPLES_DIR):
        index = next((i for scene, i in by_scene.items() if scene in path.name), 0)
        rows.append([{"text": questions[index], "files": [str(path)]}])
    return rows


def build_demo(service: ConversationService, settings: Settings) -> gr.Blocks:
    """The web chat as a Gradio Blocks app (not launched)."""
    h = ChatHandlers(service, settings)
    lang0 = DEFAULT_LANG
    temperature0, top_p0, max_new0 = h.generation_of(None)
    concurrency = GENERATION_CONCURRENCY.get(settings.backend, 1)

    with gr.Blocks(title="RemoteGLM", fill_height=True) as demo:
        conversation = gr.State(None)
        editing = gr.State(False)

        with gr.Sidebar(label="RemoteGLM", open=True):
            lang = gr.Radio(choices=list(LANGS.items()), value=lang0, label=t(lang0, "language"), elem_id="lang")
            new_btn = gr.Button(t(lang0, "new"), variant="primary", elem_id="new-conversation")
            search_box = gr.Textbox(placeholder=t(lang0, "search"), show_label=False, max_lines=1,
                                    elem_id="search")
            conversations = gr.Radio(choices=[], label=t(lang0, "history"), elem_id="conversations")
            thumbs = gr.HTML("", elem_id="thumbs", js_on_load=None)  # a <style>: each row's thumbnail
            rename_box = gr.Textbox(label=t(lang0, "rename_label"), max_lines=1, elem_id="rename-box")
            rename_btn = gr.Button(t(lang0, "rename"), size="sm", elem_id="rename")
            id_box = gr.Textbox(label=t(lang0, "conversation_id"), interactive=False, max_lines=1,
                                elem_id="conversation-id")
            delete_btn = gr.Button(t(lang0, "delete"), size="sm", variant="stop", elem_id="delete")
            with gr.Column(visible=False) as confirm:
                confirm_text = gr.Markdown(t(lang0, "delete_confirm"))
                with gr.Row():
                    delete_yes = gr.Button(t(lang0, "delete_yes"), size="sm", variant="stop", elem_id="delete-yes")
                    delete_no = gr.Button(t(lang0, "delete_no"), size="sm", elem_id="delete-no")

        header = gr.Markdown(f"## {t(lang0, 'title')}\n{t(lang0, 'subtitle')}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                chatbot = gr.Chatbot(label=t(lang0, "chatbot"), placeholder=t(lang0, "chat_placeholder"),
                                     height=520, elem_id="chatbot", buttons=["copy"],
                                     group_consecutive_messages=False)
                notice = gr.Markdown("", elem_id="notice")
                textbox = gr.MultimodalTextbox(
                    placeholder=t(lang0, "input_placeholder"), show_label=False, file_count="single",
                    sources=["upload"], stop_btn=True, submit_btn=True, autofocus=True, elem_id="question",
                )
                with gr.Row():
                    regen_btn = gr.Button(t(lang0, "regenerate"), size="sm", elem_id="regenerate")
                    edit_btn = gr.Button(t(lang0, "edit_last"), size="sm", elem_id="edit-last")
                    stop_btn = gr.Button(t(lang0, "stop"), size="sm", elem_id="stop")
                examples = gr.Examples(_examples(lang0), inputs=[textbox], label=t(lang0, "examples"),
                                       examples_per_page=5)
                with gr.Accordion(t(lang0, "settings"), open=False) as settings_panel:
                    temperature = gr.Slider(0.0, 2.0, value=temperature0, step=0.05, label=t(lang0, "temperature"),
                                            info=t(lang0, "temperature_info"))
                    top_p = gr.Slider(0.05, 1.0, value=top_p0, step=0.05, label=t(lang0, "top_p"))
                    max_new = gr.Slider(1, settings.max_new_tokens_limit, value=max_new0, step=1,
                                        label=t(lang0, "max_new_tokens"))
                    bands = gr.Textbox("", label=t(lang0, "bands"), placeholder="4,3,2", max_lines=1,
                                       elem_id="bands")
                with gr.Accordion(t(lang0, "export"), open=False) as export_panel:
                    with gr.Row():
                        export_md = gr.Button(t(lang0, "export_md"), size="sm", elem_id="export-md")
                        export_json = gr.Button(t(lang0, "export_json"), size="sm", elem_id="export-json")
                        export_html = gr.Button(t(lang0, "export_html"), size="sm", elem_id="export-html")
                    export_file = gr.File(label=t(lang0, "export_file"), visible=False, elem_id="export-file")
                # 分块分析 (tile analysis of a large scene): ui/landuse.py
                add_landuse_panel(service, chatbot, conversation, lang, bands, h.refresh)
            # beside the chat and everything under it, in view while the page scrolls (sticky within this row):
            # the image under discussion, zoomable
            with gr.Column(scale=2, min_width=300, elem_id="image-column"):
                gr.HTML(IMAGE_PANE, js_on_load=IMAGE_PANE_JS, elem_id="image-pane", apply_default_css=False)

        # --- events ---------------------------------------------------------------------------------------------------
        chat_outputs = outputs(ChatOutputs, chatbot=chatbot, textbox=textbox, conversation=conversation,
                               editing=editing, sidebar=conversations, id_box=id_box)
        gen_inputs = [temperature, top_p, max_new]
        # Enter while an answer streams: `enqueue` empties the box at once and shows the question as queued, and
        # trigger_mode="multiple" makes Gradio queue its `submit` to run next (the default "once" dropped it).
        textbox.submit(h.enqueue, [textbox, lang], outputs(QueueOutputs, textbox=textbox, notice=notice), queue=False,
                       trigger_mode="multiple", api_visibility="private")
        submit_event = textbox.submit(
            h.submit, [textbox, conversation, editing, lang, *gen_inputs, bands], chat_outputs, api_name="chat",
            concurrency_limit=concurrency, concurrency_id="generate", show_progress="hidden", trigger_mode="multiple",
        )
        submit_event.then(h.after_turn, [conversation], outputs(AfterTurnOutputs, notice=notice, title=rename_box),
                          queue=False, api_visibility="private")
        submit_event.then(h.thumbnails, None, thumbs, queue=False, api_visibility="private", show_progress="hidden")
        regen_event = regen_btn.click(
            h.regenerate, [conversation, lang, *gen_inputs], chat_outputs, api_name="regenerate",
            concurrency_limit=concurrency, concurrency_id="generate", show_progress="hidden",
        )
        running = [submit_event, regen_event]
        stop_btn.click(h.stop, None, None, queue=False, cancels=running, api_name="stop").then(
            h.refresh, [conversation, lang], chatbot, api_visibility="private")
        textbox.stop(h.stop, None, None, queue=False, cancels=running, api_visibility="private").then(
            h.refresh, [conversation, lang], chatbot, api_visibility="private")
        edit_btn.click(h.start_edit, [conversation, lang],
                       outputs(EditOutputs, textbox=textbox, editing=editing, notice=notice), api_name="edit_last")

        open_outputs = outputs(OpenOutputs, chatbot=chatbot, conversation=conversation, editing=editing,
                               title=rename_box, temperature=temperature, top_p=top_p, max_new_tokens=max_new,
                               confirm=confirm, sidebar=conversations, id_box=id_box)
        search_box.input(h.search, [search_box, lang, conversation], conversations, api_name="search",
                         trigger_mode="always_last", show_progress="hidden")
        conversations.input(h.open, [conversations, lang], open_outputs, api_name="open")
        new_btn.click(h.new, [lang], open_outputs, api_name="new")
        chatbot.clear(h.new, [lang], open_outputs, api_visibility="private")  # the chat's trash icon: a fresh start
        rename_btn.click(h.rename, [conversation, rename_box, lang], conversations, api_name="rename")
        rename_box.submit(h.rename, [conversation, rename_box, lang], conversations, api_visibility="private")
        delete_btn.click(h.ask_delete, [conversation], confirm, api_visibility="private")
        delete_no.click(h.cancel_delete, None, confirm, api_visibility="private")
        delete_yes.click(h.delete, [conversation, lang], open_outputs, api_name="delete")
        for slider in gen_inputs:
            slider.release(h.remember, [conversation, *gen_inputs], None, api_visibility="private")
        def exporter(fmt: str) -> Callable[..., Any]:
            def export(conversation_id: str | None, code: str, request: gr.Request = None) -> Any:
                return h.export(conversation_id, fmt, code, request)
            return export

        for button, fmt in ((export_md, "md"), (export_json, "json"), (export_html, "html")):
            button.click(exporter(fmt), [conversation, lang], export_file, api_name=f"export_{fmt}")

        relabel: list[tuple[Any, str, str]] = [
            (new_btn, "value", "new"), (conversations, "label", "history"), (rename_box, "label", "rename_label"),
            (rename_btn, "value", "rename"), (id_box, "label", "conversation_id"), (delete_btn, "value", "delete"), (confirm_text, "value", "delete_confirm"),
            (delete_yes, "value", "delete_yes"), (delete_no, "value", "delete_no"), (chatbot, "label", "chatbot"),
            (chatbot, "placeholder", "chat_placeholder"), (textbox, "placeholder", "input_placeholder"), (search_box, "placeholder", "search"),
            (regen_btn, "value", "regenerate"), (edit_btn, "value", "edit_last"), (stop_btn, "value", "stop"),
            (settings_panel, "label", "settings"), (temperature, "label", "temperature"),
            (temperature, "info", "temperature_info"),
            (max_new, "label", "max_new_tokens"), (bands, "label", "bands"), (export_panel, "label", "export"), (export_md, "value", "export_md"),
            (export_json, "value", "export_json"), (export_html, "value", "export_html"),
            (export_file, "label", "export_file"),
            (examples.dataset, "label", "examples"),
        ]
        components = list(dict.fromkeys(c for c, _, _ in relabel))

        def switch_language(code: str, conversation_id: str | None, request: gr.Request = None) -> list[Any]:
            updates: dict[Any, dict[str, str]] = {}
            for component, prop, key in relabel:
                updates.setdefault(component, {})[prop] = t(code, key)
            values = [gr.update(**updates[c]) for c in components]
            header_text = f"## {t(code, 'title')}\n{t(code, 'subtitle')}"
            owner = _owner(request)
            view = service.history(conversation_id, owner) if h._exists(conversation_id, owner) else None
            return [*values, header_text, to_chatbot(view, code) if view else gr.skip(),
                    h.sidebar(code, conversation_id, session=_session(request), owner=owner)]

        lang.change(switch_language, [lang, conversation], [*components, header, chatbot, conversations],
                    api_visibility="private")
        demo.load(h.on_load, [lang], conversations, api_visibility="private").then(
            h.thumbnails, None, thumbs, api_visibility="private", show_progress="hidden")
    return demo


def launch_options(settings: Settings, accounts: Accounts | None = None, store: Any = None) -> dict[str, Any]:
    """Keyword arguments for `demo.launch` from the settings: bind address, login (the accounts table and/or
    --auth-user), upload limit, served folders (the image folder only through Gradio's cache, and with a login a
    cached image only to its owner when `store`, the ConversationStore, is given: see PrivateFiles)."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    auth = login_check(settings, accounts)
    owned = (lambda sha, user: store.image_owned(sha, user)) if store is not None else None
    private = Middleware(PrivateFiles, hidden=[settings.resolved_image_dir], cache=Path(get_upload_folder()),
                         owned=owned)
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "auth": auth,
        "auth_message": "RemoteGLM" if auth else None,
        "app_kwargs": {"middleware": [private]},
        "max_file_size": int(settings.max_upload_mb * 1024 * 1024),
        "allowed_paths": [str(settings.resolved_image_dir), str(EXAMPLES_DIR)],
        "show_error": False,
        "quiet": True,
        "css": CSS,
        "head": PAGE_HEAD,
    }
