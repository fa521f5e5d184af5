"""Stored conversations as the web chat shows them: Gradio message-format history and sidebar choices.

Pure functions over the conversation service's views (no Gradio import), so they are unit-tested directly:

    to_chatbot(service.history(conv_id), "zh")
    # [{"role": "user", "content": [{"path": ".../<sha>.jpg"}, "图中有多少架飞机？"]}, {"role": "assistant", ...}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.service import ConversationView, MessageView
from ui.i18n import t

ERROR_MARK = "⚠ "


def message_text(message: MessageView, lang: str) -> str:
    """The text of a stored message plus a note when the answer did not complete."""
    text = message.text or ""
    if message.role != "assistant" or message.status == "complete":
        return text
    if message.status == "error":
        note = f"{ERROR_MARK}{t(lang, 'failed')}" + (f": {message.error}" if message.error else "")
    else:  # interrupted, or 'streaming' left behind by a crash
        note = f"*{t(lang, 'interrupted')}*"
    return f"{text}\n\n{note}" if text else note


def to_chatbot(view: ConversationView | None, lang: str) -> list[dict[str, Any]]:
    """Message-format history for gr.Chatbot: images first, then the text, one bubble per stored message; a
    question's earlier answers (regenerated) follow it as collapsed bubbles, before the current answer."""
    if view is None:
        return []
    history = []
    for message in view.messages:
        content: list[Any] = [{"path": str(ref.path)} for ref in message.images]
        text = message_text(message, lang)
        if text or not content:
            content.append(text)
        history.append({"role": message.role, "content": content})
        history.extend(earlier_bubbles(message, lang))
    return history


def earlier_bubbles(question: MessageView, lang: str) -> list[dict[str, Any]]:
    """A question's earlier answers as collapsed assistant bubbles titled "earlier answer 1/2" (the current one,
    shown after them, is 2/2)."""
    total = len(question.alternatives) + 1
    bubbles = []
    for n, alternative in enumerate(question.alternatives, start=1):
        text = message_text(MessageView(alternative.id, "assistant", alternative.text, alternative.status, [],
                                        alternative.created_at, alternative.error), lang)
        if alternative.question != question.text:
            text = f"*{t(lang, 'earlier_question', question=alternative.question)}*\n\n{text}"
        bubbles.append({"role": "assistant", "content": text,
                        "metadata": {"title": t(lang, "earlier_answer", n=n, total=total), "status": "done"}})
    return bubbles


def error_bubble(text: str) -> dict[str, Any]:
    """An assistant bubble with a user-facing error (shown, never stored)."""
    return {"role": "assistant", "content": f"{ERROR_MARK}{text}"}


def thinking_bubble(lang: str) -> dict[str, Any]:
    """The answer's bubble before its first token: shows that the model is at work."""
    return {"role": "assistant", "content": t(lang, "thinking")}


def queued_bubble(text: str, files: list[Any], lang: str) -> dict[str, Any]:
    """A question sent while another answer streams, shown until its own turn starts (not stored yet)."""
    content: list[Any] = [{"path": str(f["path"] if isinstance(f, dict) else f)} for f in files]
    content.append(f"{text}\n\n*{t(lang, 'queued_mark')}*" if text else f"*{t(lang, 'queued_mark')}*")
    return {"role": "user", "content": content}


def conversation_label(view: ConversationView, lang: str) -> str:
    return f"{view.title or t(lang, 'untitled')} · {view.updated_at:%m-%d %H:%M}"


def conversation_choices(views: list[ConversationView], lang: str) -> list[tuple[str, str]]:
    """(label, id) pairs for the sidebar, in the order given (the store lists newest first)."""
    return [(conversation_label(v, lang), v.id) for v in views]


def export_filename(view: ConversationView, suffix: str) -> str:
    return f"remoteglm-{view.id[:8]}.{suffix}"


def example_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
