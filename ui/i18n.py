"""Interface strings of the web and terminal chats, Chinese first, English second.

    from ui.i18n import t
    t("zh", "send")        # '发送'
    t("en", "too_big", limit=50)

Messages that come from the core (ServiceError, ImageError) are already bilingual and are shown as they are.
"""

from __future__ import annotations

LANGS = {"中文": "zh", "English": "en"}
DEFAULT_LANG = "zh"

STRINGS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "RemoteGLM 遥感图像对话",
        "subtitle": "上传一张遥感图像（JPEG、PNG、TIFF、BMP、WebP），用中文或英文提问。所有对话都保存在本地数据库中。",
        "chatbot": "对话",
        "chat_placeholder": "上传图像并提问，回答会逐字显示。",
        "input_placeholder": "输入问题，可拖入、粘贴或上传一张遥感图像，回车发送…",
        "history": "历史对话（最新在前）",
        "new": "新对话",
        "search": "🔍 搜索历史对话（标题、问题、回答）",
        "rename_label": "重命名当前对话",
        "rename": "重命名",
        "conversation_id": "对话 ID（终端继续：python app.py cli --conversation ID）",
        "delete": "删除当前对话",
        "delete_confirm": "确定要删除这个对话吗？此操作无法撤销。",
        "delete_yes": "确认删除",
        "delete_no": "取消",
        "regenerate": "重新生成",
        "edit_last": "编辑上一个问题",
        "stop": "停止",
        "settings": "生成参数",
        "temperature": "温度 (temperature)",
        "top_p": "top_p",
        "max_new_tokens": "最大生成长度 (max new tokens)",
        "bands": "多波段 TIFF 显示的波段（如 4,3,2；留空：按波段名取红绿蓝，否则前三个）",
        "export": "导出",
        "export_md": "导出 Markdown",
        "export_json": "导出 JSON",
        "export_file": "导出文件",
        "examples": "示例（点击填入）",
        "language": "界面语言 / Language",
        "untitled": "未命名对话",
        "interrupted": "（已停止，保留部分回答）",
        "failed": "生成失败",
        "editing": "正在编辑上一个问题：修改后按回车重新回答。",
        "no_conversation": "请先开始或打开一个对话。",
        "too_big": "文件过大（{size:.1f} MB），上限为 {limit:g} MB。",
        "one_image": "每个问题只能附带一张图像，已使用第一张。",
        "internal_error": "出现内部错误，已记录到服务器日志；已保存的对话不受影响。",
        "deleted": "对话已删除。",
        "thinking": "⏳ 正在思考…",
        "need_image": "这个对话里还没有图像：请先上传（拖入、粘贴或点击回形针）一张遥感图像，再提问。问题已留在输入框中。",
        "queued": "正在回答上一个问题；新问题已排队，将接着回答。",
        "queued_mark": "（排队中，将在当前回答之后回答）",
        "earlier_answer": "较早的回答 {n}/{total}（点击展开）",
        "earlier_question": "当时的问题：{question}",
        "temperature_info": "0：总是取最可能的回答。「重新生成」总会采样，给出另一个候选回答（温度为 0 时用 0.8，top_p 至少 0.9）；"
                            "之前的回答保留在上方，可展开查看，也包含在导出中。",
        "export_html": "导出 HTML",
        # terminal chat
        "cli_welcome": "欢迎使用 RemoteGLM 遥感图像对话。命令：clear 新对话，history 查看历史，stop 退出；"
                       "回答过程中按 Ctrl+C 停止生成。",
        "cli_image": "图像路径（直接回车跳过）：",
        "cli_user": "用户：",
        "cli_bot": "RemoteGLM：",
        "cli_cleared": "已开始新对话。",
        "cli_resumed": "继续对话 {id}（{title}）：",
        "cli_bye": "再见。对话已保存，可用 --conversation {id} 继续。",
        "cli_stopped": "[已停止]",
        "cli_image_ok": "已读取图像 {name}（{width}×{height}）。",
    },
    "en": {
        "title": "RemoteGLM remote-sensing chat",
        "subtitle": "Upload a remote-sensing image (JPEG, PNG, TIFF, BMP, WebP) and ask in Chinese or English. "
                    "Every conversation is kept in the local database.",
        "chatbot": "Conversation",
        "chat_placeholder": "Upload an image and ask; the answer streams in as it is written.",
        "input_placeholder": "Type a question; drop, paste or upload a remote-sensing image; Enter sends…",
        "history": "Conversations (newest first)",
        "new": "New conversation",
        "search": "🔍 Search conversations (titles, questions, answers)",
        "rename_label": "Rename this conversation",
        "rename": "Rename",
        "conversation_id": "Conversation ID (continue in a terminal: python app.py cli --conversation ID)",
        "delete": "Delete this conversation",
        "delete_confirm": "Delete this conversation? This cannot be undone.",
        "delete_yes": "Delete",
        "delete_no": "Cancel",
        "regenerate": "Regenerate",
        "edit_last": "Edit last question",
        "stop": "Stop",
        "settings": "Generation settings",
        "temperature": "Temperature",
        "top_p": "top_p",
        "max_new_tokens": "Max new tokens",
        "bands": "Bands of a multi-band TIFF to show (e.g. 4,3,2; empty: red, green, blue by band name, else 1-2-3)",
        "export": "Export",
        "export_md": "Export Markdown",
        "export_json": "Export JSON",
        "export_file": "Exported file",
        "examples": "Examples (click to fill in)",
        "language": "界面语言 / Language",
        "untitled": "Untitled",
        "interrupted": "(stopped; partial answer kept)",
        "failed": "Generation failed",
        "editing": "Editing the last question: change it and press Enter to get a new answer.",
        "no_conversation": "Start or open a conversation first.",
        "too_big": "File too large ({size:.1f} MB); the limit is {limit:g} MB.",
        "one_image": "Only one image per question; the first one was used.",
        "internal_error": "Internal error (logged on the server); stored conversations are unaffected.",
        "deleted": "Conversation deleted.",
        "thinking": "⏳ Thinking…",
        "need_image": "There is no image in this conversation yet: upload one (drop, paste or click the clip), then "
                      "ask. Your question is still in the box.",
        "queued": "Still answering the previous question; your new question is queued and answered next.",
        "queued_mark": "(queued: answered after the current one)",
        "earlier_answer": "Earlier answer {n}/{total} (click to open)",
        "earlier_question": "Question then: {question}",
        "temperature_info": "0: always the most likely answer. Regenerate always samples another candidate "
                            "(at temperature 0 it uses 0.8; top_p at least 0.9); earlier answers stay above it "
                            "(click to open) and in the export.",
        "export_html": "Export HTML",
        "cli_welcome": "Welcome to RemoteGLM. Commands: clear = new conversation, history = show it, stop = quit; "
                       "Ctrl+C stops an answer.",
        "cli_image": "Image path (Enter to skip): ",
        "cli_user": "User: ",
        "cli_bot": "RemoteGLM: ",
        "cli_cleared": "Started a new conversation.",
        "cli_resumed": "Resuming conversation {id} ({title}):",
        "cli_bye": "Bye. The conversation is saved; continue it with --conversation {id}.",
        "cli_stopped": "[stopped]",
        "cli_image_ok": "Read image {name} ({width}×{height}).",
    },
}

EXAMPLE_QUESTIONS = {
    "zh": ["这张遥感图像展现了什么场景？", "图中有多少架飞机？", "港口里停着多少艘船？", "图中有储罐吗？",
           "请详细描述这张图像。"],
    "en": ["What scene does this remote-sensing image show?", "How many airplanes are there?",
           "How many boats are in the harbor?", "Are there storage tanks?", "Describe the image in detail."],
}


def t(lang: str, key: str, **values: object) -> str:
    """The string `key` in `lang` (falling back to Chinese), formatted with `values`."""
    text = STRINGS.get(lang, STRINGS[DEFAULT_LANG]).get(key) or STRINGS[DEFAULT_LANG][key]
    return text.format(**values) if values else text
