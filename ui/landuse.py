"""「分块分析」 (tile analysis) in the web chat and the terminal chat: a land-use map of a large image or GeoTIFF.

Web: `add_landuse_panel(...)` lays out an accordion inside the chat's Blocks (upload, ground resolution, the
button with a progress bar, a cancel button that keeps the finished tiles), posts the overlay, legend and summary
into the chat, answers 「哪里有储罐？」 / 「港口占多大面积？」 from the map with a highlight, and a click on the
overlay asks the chat model about that tile. Terminal: `tiles_command(chat, "PATH [--gsd M]")` (the `/tiles`
command). The work itself is in `bot.landuse*`; handlers here are plain functions tests call without a browser.
"""

from __future__ import annotations

import shlex
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

from bot.landuse_store import (SceneClassifierError, classifier_for, export_files, follow_up_turn, load_map,
                               run_analysis, tile_crop)
from bot.service import ConversationService, ImageError, NotFound, ServiceError, StorageError
from ui.outputs import outputs

USER_ERRORS = (ImageError, ServiceError, NotFound, StorageError, SceneClassifierError)
# The question a click asks about a tile: the mini's trained phrasing (a longer one with the tile's row and column
# got garbled answers from it); the row and column go into the notice.
TILE_QUESTION = {"zh": "请描述这张遥感图像。", "en": "Describe this remote-sensing image."}


class Analysis(NamedTuple):
    """What `LandUseHandlers.analyze` returns."""

    conversation: str | None  # the conversation the map is stored with (None: nothing stored)
    overlay: str | None  # path of the stored overlay PNG
    files: list[str]  # the exports: PNG, GeoJSON, GeoTIFF
    notice: str  # an error or "cancelled", else ""


class MapReply(NamedTuple):
    """What `LandUseHandlers.ask_map` returns."""

    highlight: Any  # PIL image of the map with the asked class highlighted, or None
    notice: str


class RunOutputs(NamedTuple):
    chatbot: Any
    conversation: str | None
    overlay: str | None
    files: list[str] | None
    notice: str


class AskOutputs(NamedTuple):
    chatbot: Any
    overlay: Any  # the highlight, or gr.skip()
    notice: str


class ClickOutputs(NamedTuple):
    chatbot: Any
    notice: str

TEXT = {
    "zh": {
        "panel": "分块分析（大幅影像 / GeoTIFF）", "file": "大幅影像或 GeoTIFF", "gsd": "地面分辨率（米/像素，无地理参考时填写，可空）",
        "run": "分块分析", "cancel": "取消", "overlay": "分块地图（点击分块向模型提问）", "ask": "就地图提问，例如：哪里有储罐？",
        "ask_btn": "在地图上回答", "files": "导出（PNG / GeoJSON / GeoTIFF）", "no_file": "请先上传一幅影像。",
        "no_map": "此对话还没有分块地图，请先进行分块分析。", "not_map_question": "地图只能回答某类地物在哪里、占多大面积，例如：哪里有储罐？",
        "progress": "分块分析", "cancelled": "已取消，保留已完成的分块。", "bad_gsd": "地面分辨率应为正数（米/像素）。",
        "cli_usage": "用法：/tiles 影像路径 [--gsd 米每像素]", "cli_saved": "已导出：",
        "asked_tile": "已就{tile}的分块向模型提问。",
    },
    "en": {
        "panel": "Tile analysis (large image / GeoTIFF)", "file": "Large image or GeoTIFF",
        "gsd": "Ground resolution (m/px, for images without georeference; optional)", "run": "Tile analysis",
        "cancel": "Cancel", "overlay": "Land-use map (click a tile to ask the model about it)",
        "ask": "Ask the map, e.g. where are the storage tanks?", "ask_btn": "Answer from the map",
        "files": "Exports (PNG / GeoJSON / GeoTIFF)", "no_file": "Upload an image first.",
        "no_map": "This conversation has no land-use map yet: run a tile analysis first.",
        "not_map_question": "The map answers where a class is and how large it is, e.g. where are the storage tanks?",
        "progress": "Tile analysis", "cancelled": "Cancelled; the finished tiles are kept.",
        "bad_gsd": "The ground resolution must be a positive number (m/px).",
        "cli_usage": "usage: /tiles IMAGE_PATH [--gsd METRES_PER_PIXEL]", "cli_saved": "Exported: ",
        "asked_tile": "Asked the model about the tile at {tile}.",
    },
}


def tr(lang: str, key: str) -> str:
    return TEXT.get(lang, TEXT["zh"])[key]


def parse_gsd(value: Any) -> float | None:
    """Empty -> None; a positive number -> float; anything else -> ImageError (bilingual)."""
    if value in (None, ""):
        return None
    try:
        gsd = float(value)
    except (TypeError, ValueError):
        gsd = -1.0
    if not gsd > 0:
        raise ImageError(f"{TEXT['zh']['bad_gsd']} ({TEXT['en']['bad_gsd']}: {value!r})")
    return gsd


class LandUseHandlers:
    """The web panel's handlers: analyse (with progress and cancel), answer from the map, ask about a tile."""

    def __init__(self, service: ConversationService, export_dir: Path | None = None):
        self.service = service
        self.export_dir = Path(export_dir or tempfile.mkdtemp(prefix="remoteglm-landuse-"))
        self.cancels: dict[str, threading.Event] = {}

    def _cancel_flag(self, session: str) -> threading.Event:
        flag = self.cancels.setdefault(session, threading.Event())
        flag.clear()
        return flag

    def cancel(self, session: str = "local") -> None:
        if session in self.cancels:
            self.cancels[session].set()

    def analyze(self, file: str | None, gsd: Any, conversation_id: str | None, lang: str = "zh",
                bands: str = "", progress=None, session: str = "local",
                owner: str | None = None) -> Analysis:
        """Analyse an uploaded scene and store its map. Errors become the notice; nothing is stored for unreadable
        input."""
        if not file:
            return Analysis(conversation=conversation_id, overlay=None, files=[], notice=tr(lang, "no_file"))
        created = None
        try:
            gsd_m = parse_gsd(gsd)
            classifier = classifier_for(self.service.backend)
            if not conversation_id or not self._exists(conversation_id, owner):
                conversation_id = created = self.service.start(owner=owner).id
            # NOTE: `if progress` would be False for a gr.Progress (it has a __len__, 0 before it tracks anything)
            report = None if progress is None else (
                lambda done, total: progress((done, total), desc=tr(lang, "progress")))
            stored, summary = run_analysis(self.service.store, conversation_id, Path(file), classifier, gsd=gsd_m,
                                           bands=bands or None, lang=lang, progress=report,
                                           cancel=self._cancel_flag(session), source_name=Path(file).name)
        except USER_ERRORS as exc:
            if created:
                self.service.delete(created)
                conversation_id = None
            return Analysis(conversation=conversation_id, overlay=None, files=[], notice=str(exc))
        files = export_files(stored, self.export_dir / conversation_id)
        return Analysis(conversation=conversation_id, overlay=str(stored.overlay.path), files=[str(p) for p in files],
                        notice=tr(lang, "cancelled") if stored.result.cancelled else "")

    def ask_map(self, text: str, conversation_id: str | None, lang: str = "zh",
                owner: str | None = None) -> MapReply:
        """A where / area question answered from the stored map: stores the turn and returns the highlight."""
        if not conversation_id or not self._exists(conversation_id, owner) or load_map(self.service.store,
                                                                               conversation_id) is None:
            return MapReply(highlight=None, notice=tr(lang, "no_map"))
        answer = follow_up_turn(self.service.store, conversation_id, text, lang)
        if answer is None:
            return MapReply(highlight=None, notice=tr(lang, "not_map_question"))
        return MapReply(highlight=answer.highlight, notice="")

    def overlay_of(self, conversation_id: str | None, owner: str | None = None) -> str | None:
        """The stored overlay of a conversation's map (shown again when the conversation is reopened), or None."""
        if not conversation_id or not self._exists(conversation_id, owner):
            return None
        stored = load_map(self.service.store, conversation_id)
        return str(stored.overlay.path) if stored else None

    def ask_tile(self, x: float, y: float, conversation_id: str | None, lang: str = "zh",
                 owner: str | None = None) -> str:
        """A click at (x, y) on the overlay: the tile's crop goes to the chat model with a question; -> notice."""
        stored = load_map(self.service.store, conversation_id) if conversation_id and self._exists(
            conversation_id, owner) else None
        if stored is None:
            return tr(lang, "no_map")
        lang = lang if lang in TILE_QUESTION else "zh"
        found = tile_crop(stored, x, y, lang=lang)
        if found is None:
            return ""
        crop, caption = found
        from bot.landuse_export import png_bytes

        try:
            for _ in self.service.send(conversation_id, TILE_QUESTION[lang], image=png_bytes(crop),
                                       image_name="tile.png", streaming=False):
                pass
        except USER_ERRORS as exc:
            return str(exc)
        return tr(lang, "asked_tile").format(tile=caption)

    def _exists(self, conversation_id: str, owner: str | None = None) -> bool:
        """Stored and (with a login) this user's; another user's conversation reads as missing."""
        return self.service.exists(conversation_id, owner)


def add_landuse_panel(service: ConversationService, chatbot, conversation, lang, bands, refresh) -> None:
    """Lay out the 分块分析 accordion inside the current `gr.Blocks` and wire it. `refresh(conversation, lang)`
    gives the chatbot's value (the web chat's own renderer), so posted turns show as every stored turn does."""
    import gradio as gr

    h = LandUseHandlers(service)
    lang0 = "zh"

    def session_of(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def owner_of(request: gr.Request | None) -> str | None:  # the logged-in user (None without a login)
        return getattr(request, "username", None) or None

    def run(file, gsd, conv, code, band_text, request: gr.Request = None, progress=gr.Progress()):
        done = h.analyze(file, gsd, conv, code, band_text, progress, session_of(request), owner_of(request))
        return RunOutputs(chatbot=refresh(done.conversation, code, request), conversation=done.conversation,
                          overlay=done.overlay, files=done.files or None, notice=done.notice)

    def ask(text, conv, code, request: gr.Request = None):
        reply = h.ask_map(text or "", conv, code, owner_of(request))
        return AskOutputs(chatbot=refresh(conv, code, request),
                          overlay=gr.skip() if reply.highlight is None else reply.highlight, notice=reply.notice)

    def cancel(request: gr.Request = None) -> None:
        h.cancel(session_of(request))

    def click(conv, code, evt: gr.SelectData, request: gr.Request = None):
        x, y = evt.index
        notice = h.ask_tile(x, y, conv, code, owner_of(request))
        return ClickOutputs(chatbot=refresh(conv, code, request), notice=notice)

    def overlay_view(conv, request: gr.Request = None):
        return h.overlay_of(conv, owner_of(request))

    # Gradio injects the request / the click by annotation; this module's annotations are strings naming a local
    # import it cannot resolve, so they are given as the classes themselves.
    for fn in (run, ask, cancel, click, overlay_view):
        fn.__annotations__["request"] = gr.Request
    click.__annotations__["evt"] = gr.SelectData

    with gr.Accordion(tr(lang0, "panel"), open=False, elem_id="landuse-panel") as panel:
        with gr.Row():
            upload = gr.File(label=tr(lang0, "file"), file_types=[".tif", ".tiff", ".png", ".jpg", ".jpeg"],
                             elem_id="landuse-file")
            gsd = gr.Textbox(label=tr(lang0, "gsd"), max_lines=1, placeholder="0.3", elem_id="landuse-gsd")
        with gr.Row():
            run_btn = gr.Button(tr(lang0, "run"), variant="primary", elem_id="landuse-run")
            cancel_btn = gr.Button(tr(lang0, "cancel"), size="sm", elem_id="landuse-cancel")
        notice = gr.Markdown("", elem_id="landuse-notice")
        overlay = gr.Image(label=tr(lang0, "overlay"), type="filepath", interactive=False, elem_id="landuse-map")
        with gr.Row():
            question = gr.Textbox(show_label=False, placeholder=tr(lang0, "ask"), max_lines=1, elem_id="landuse-ask")
            ask_btn = gr.Button(tr(lang0, "ask_btn"), size="sm", elem_id="landuse-ask-btn")
        files = gr.File(label=tr(lang0, "files"), file_count="multiple", interactive=False, elem_id="landuse-files")

    # The language switch relabels the panel too (beside the web chat's own listener on the same radio).
    relabel = [(panel, "label", "panel"), (upload, "label", "file"), (gsd, "label", "gsd"), (run_btn, "value", "run"),
               (cancel_btn, "value", "cancel"), (overlay, "label", "overlay"), (question, "placeholder", "ask"),
               (ask_btn, "value", "ask_btn"), (files, "label", "files")]

    def switch_language(code: str) -> list[Any]:
        return [gr.update(**{prop: tr(code, key)}) for _, prop, key in relabel]

    lang.change(switch_language, [lang], [component for component, _, _ in relabel], api_visibility="private")
    run_btn.click(run, [upload, gsd, conversation, lang, bands],
                  outputs(RunOutputs, chatbot=chatbot, conversation=conversation, overlay=overlay, files=files,
                          notice=notice), api_name="landuse", concurrency_id="generate", concurrency_limit=1)
    cancel_btn.click(cancel, None, None, queue=False, api_visibility="private")
    for trigger in (ask_btn.click, question.submit):
        trigger(ask, [question, conversation, lang],
                outputs(AskOutputs, chatbot=chatbot, overlay=overlay, notice=notice), api_visibility="private")
    overlay.select(click, [conversation, lang], outputs(ClickOutputs, chatbot=chatbot, notice=notice),
                   api_visibility="private",
                   concurrency_id="generate", concurrency_limit=1)
    # Opening another conversation (sidebar, new, delete) shows its stored map, or none, without recomputing.
    conversation.change(overlay_view, [conversation], overlay, api_visibility="private", queue=False)


# --- terminal chat ---------------------------------------------------------------------------------------------------
def tiles_command(chat, rest: str) -> None:
    """`/tiles PATH [--gsd M]` in the terminal chat: analyse, print progress and the summary, store the map with
    the conversation and write PNG / GeoJSON / GeoTIFF next to the working directory. Ctrl+C cancels and keeps
    the finished tiles."""
    lang = chat.state.lang
    try:
        words = shlex.split(rest)
    except ValueError:
        words = []
    gsd = None
    if "--gsd" in words:
        i = words.index("--gsd")
        gsd = words[i + 1] if i + 1 < len(words) else ""
        words = words[:i] + words[i + 2:]
    if len(words) != 1:
        chat.say(tr(lang, "cli_usage"))
        return
    service = chat.service
    created = None
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = run_analysis(service.store, chat.state.conversation_id, Path(words[0]).expanduser(),
                                            classifier_for(service.backend), gsd=parse_gsd(gsd), lang=lang,
                                            progress=lambda d, n: chat.say(f"\r{tr(lang, 'progress')} {d}/{n}",
                                                                           end=""), cancel=cancel)
        except USER_ERRORS as exc:
            outcome["error"] = exc

    if chat.state.conversation_id is None:
        chat.state.conversation_id = created = service.start().id
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            worker.join(0.2)
        except KeyboardInterrupt:
            cancel.set()
    chat.say()
    if "error" in outcome:
        if created:
            service.delete(created)
            chat.state.conversation_id = None
        chat.say(str(outcome["error"]))
        return
    stored, summary = outcome["value"]
    chat.say(f"{chat_label(lang)}{summary}")
    if stored.result.cancelled:
        chat.say(tr(lang, "cancelled"))
    stem = f"landuse-{chat.state.conversation_id[:8]}"
    paths = export_files(stored, Path.cwd() / stem, stem)
    chat.say(tr(lang, "cli_saved") + ", ".join(str(p) for p in paths))


def map_answer_command(chat, question: str) -> bool:
    """Answer a where / area question from the conversation's map in the terminal chat (stored as a turn, the
    highlight written to a PNG). False when there is no map or the question is not one (the model answers)."""
    conv = chat.state.conversation_id
    if conv is None or chat.state.image is not None:
        return False
    answer = follow_up_turn(chat.service.store, conv, question, chat.state.lang)
    if answer is None:
        return False
    text = answer.text
    if answer.highlight is not None:
        path = Path.cwd() / f"landuse-{conv[:8]}-{answer.cls}.png"
        answer.highlight.save(path)
        text += f"\n{path}"
    chat.say(f"{chat_label(chat.state.lang)}{text}")
    return True


def chat_label(lang: str) -> str:
    from ui.i18n import t

    return t(lang, "cli_bot")


__all__ = ["LandUseHandlers", "add_landuse_panel", "map_answer_command", "parse_gsd", "tiles_command"]
