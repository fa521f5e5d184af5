"""A stored conversation as one self-contained file: Markdown (for people), HTML (opens in any browser) or JSON
(for programs). Images are embedded (base64 `data:` URIs, in JSON a `data` field), so the file opens on another
machine; a question's earlier answers (regenerated or edited) are included after it.

    to_markdown(store.get(conversation_id))     # '# 机场 · 这张遥感图像展现了什么场景？\\n\\n- id: ...'
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
from typing import Any

from storage.repository import AlternativeView, ConversationView, ImageRef, MessageView

ROLE_NAMES = {"user": "用户 (user)", "assistant": "RemoteGLM", "system": "系统 (system)"}
EARLIER = "较早的回答 (earlier answer)"
MISSING = "图像文件缺失 (image file missing)"
HTML_STYLE = """body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;max-width:860px;margin:2em auto;padding:0 1em;
line-height:1.6;color:#1f2937}.msg{border-radius:10px;padding:.6em 1em;margin:.8em 0;white-space:pre-wrap}
.user{background:#eef2ff}.assistant{background:#f3f4f6}.role{font-weight:600;font-size:.85em;color:#4b5563}
img{max-width:100%;border-radius:6px;display:block;margin:.4em 0}details{margin:.4em 0 .4em 1.5em;color:#4b5563}
.note{font-style:italic;color:#6b7280}.meta{color:#6b7280;font-size:.85em}"""


def image_data_uri(ref: ImageRef) -> str | None:
    """The image file as a `data:` URI, or None when its file is gone."""
    try:
        data = ref.path.read_bytes()
    except OSError:
        return None
    media_type = mimetypes.guess_type(ref.filename)[0] or "application/octet-stream"
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _status_note(status: str, error: str | None) -> str:
    return "" if status == "complete" else f"[{status}{': ' + error if error else ''}]"


def _alternative_json(a: AlternativeView) -> dict[str, Any]:
    return {"id": a.id, "question": a.question, "text": a.text, "status": a.status, "error": a.error,
            "created_at": a.created_at.isoformat(), "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens, "latency_ms": a.latency_ms}


def _image_json(ref: ImageRef) -> dict[str, Any]:
    uri = image_data_uri(ref)
    media_type, _, data = (uri or "").partition(";base64,")
    return {"sha256": ref.sha256, "file": ref.filename, "width": ref.width, "height": ref.height,
            "media_type": media_type.removeprefix("data:") or None, "data": data or None}


def to_json(conv: ConversationView) -> dict[str, Any]:
    """Every stored field; each image with its bytes as base64 (`data`, None if the file is gone)."""
    return {
        "id": conv.id,
        "title": conv.title,
        "model": conv.model,
        "settings": conv.settings,
        "created_at": conv.created_at.isoformat(),
        "updated_at": conv.updated_at.isoformat(),
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "text": m.text,
                "status": m.status,
                "error": m.error,
                "images": [_image_json(i) for i in m.images],
                "created_at": m.created_at.isoformat(),
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "latency_ms": m.latency_ms,
                "earlier_answers": [_alternative_json(a) for a in m.alternatives],
            }
            for m in conv.messages
        ],
    }


def to_json_text(conv: ConversationView) -> str:
    return json.dumps(to_json(conv), ensure_ascii=False, indent=2)


def _earlier_markdown(m: MessageView) -> list[str]:
    lines = []
    for n, a in enumerate(m.alternatives, start=1):
        lines += [f"### {EARLIER} {n}/{len(m.alternatives) + 1}", ""]
        if a.question != m.text:
            lines += [f"> {a.question}", ""]
        lines += [a.text or "", ""]
        if note := _status_note(a.status, a.error):
            lines += [f"*{note}*", ""]
    return lines


def to_markdown(conv: ConversationView) -> str:
    lines = [f"# {conv.title or '未命名对话'}", "", f"- id: `{conv.id}`", f"- model: `{conv.model or '-'}`",
             f"- created: {conv.created_at:%Y-%m-%d %H:%M:%S %Z}", ""]
    for m in conv.messages:
        lines.append(f"## {ROLE_NAMES.get(m.role, m.role)}")
        lines.append("")
        for image in m.images:
            uri = image_data_uri(image)
            lines.append(f"![{image.filename}]({uri})" if uri else f"*[{MISSING}: {image.filename}]*")
            lines.append("")
        lines.append(m.text or "")
        if note := _status_note(m.status, m.error):
            lines.append("")
            lines.append(f"*{note}*")
        lines.append("")
        lines += _earlier_markdown(m)
    return "\n".join(lines)


def to_html(conv: ConversationView) -> str:
    """A standalone page (no external file, script or font) that shows the conversation as the chat did."""
    esc = html.escape
    title = esc(conv.title or "未命名对话")
    parts = [f'<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>{title}</title>',
             f"<style>{HTML_STYLE}</style></head><body><h1>{title}</h1>",
             f'<p class="meta">id {esc(conv.id)} · model {esc(conv.model or "-")} · '
             f"{conv.created_at:%Y-%m-%d %H:%M:%S %Z}</p>"]
    for m in conv.messages:
        parts.append(f'<div class="msg {esc(m.role)}"><div class="role">{esc(ROLE_NAMES.get(m.role, m.role))}</div>')
        for image in m.images:
            uri = image_data_uri(image)
            parts.append(f'<img src="{uri}" alt="{esc(image.filename)}" width="{image.width}">' if uri
                         else f'<p class="note">[{MISSING}: {esc(image.filename)}]</p>')
        parts.append(esc(m.text or ""))
        if note := _status_note(m.status, m.error):
            parts.append(f'<p class="note">{esc(note)}</p>')
        parts.append("</div>")
        for n, a in enumerate(m.alternatives, start=1):
            asked = f'<p class="note">{esc(a.question)}</p>' if a.question != m.text else ""
            note = _status_note(a.status, a.error)
            parts.append(f"<details><summary>{EARLIER} {n}/{len(m.alternatives) + 1}</summary>{asked}"
                         f'<div class="msg assistant">{esc(a.text or "")}</div>'
                         + (f'<p class="note">{esc(note)}</p>' if note else "") + "</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


EXPORTERS = {"md": to_markdown, "json": to_json_text, "html": to_html}
