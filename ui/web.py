"""The Gradio 6 web chat: upload a remote-sensing image, ask, watch the answer stream; every turn is stored.

The UI is a thin layer: `ui/handlers.py`'s `ChatHandlers` holds plain functions over message-format history that
call `bot.service.ConversationService` (no model code here), and `build_demo` lays the Blocks out and wires events.
Launching happens only in `app.py`:

    demo = build_demo(service, settings)
    demo.queue().launch(**launch_options(settings))   # what `python app.py` does

Bad input (not an image, corrupt, empty, too large, empty or overlong question) becomes an assistant bubble with
the core's bilingual message; nothing is stored for it and nothing stored is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from bot.accounts import Accounts
from bot.service import ConversationService
from settings import REPO_ROOT, Settings
from ui.access import PrivateFiles, login_check
from ui.chat_view import example_files, to_chatbot
from ui.handlers import ChatHandlers, request_owner, request_session
from ui.i18n import DEFAULT_LANG, EXAMPLE_QUESTIONS, LANGS, t
from ui.landuse import add_landuse_panel
from ui.outputs import AfterTurnOutputs, ChatOutputs, EditOutputs, OpenOutputs, QueueOutputs, outputs
from ui.panes import IMAGE_PANE_CSS, IMAGE_PANE_JS, SIDEBAR_CSS, image_pane_html

log = logging.getLogger(__name__)

EXAMPLES_DIR = REPO_ROOT / "examples"
# How many answers are generated at once, per backend. NOTE: a local model is one instance serving every browser tab;
# two generations at once on one GPU only split its memory and time, so answers queue one at a time (other tabs'
# sidebar/open/rename stay instant). A remote OpenAI-compatible server (vLLM) batches requests itself.
GENERATION_CONCURRENCY = {"hf": 1, "openai": 8}
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
            owner = request_owner(request)
            view = service.history(conversation_id, owner) if h._exists(conversation_id, owner) else None
            return [*values, header_text, to_chatbot(view, code) if view else gr.skip(),
                    h.sidebar(code, conversation_id, session=request_session(request), owner=owner)]

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
