"""A stored conversation as Markdown (for people) or JSON (for programs); images referenced by hash and path."""

from __future__ import annotations

import json
from typing import Any

from storage.repository import ConversationView

ROLE_NAMES = {"user": "用户 (user)", "assistant": "RemoteGLM", "system": "系统 (system)"}


def to_json(conv: ConversationView) -> dict[str, Any]:
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
                "images": [{"sha256": i.sha256, "file": i.filename, "width": i.width, "height": i.height}
                           for i in m.images],
                "created_at": m.created_at.isoformat(),
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "latency_ms": m.latency_ms,
            }
            for m in conv.messages
        ],
    }


def to_json_text(conv: ConversationView) -> str:
    return json.dumps(to_json(conv), ensure_ascii=False, indent=2)


def to_markdown(conv: ConversationView) -> str:
    lines = [f"# {conv.title or '未命名对话'}", "", f"- id: `{conv.id}`", f"- model: `{conv.model or '-'}`",
             f"- created: {conv.created_at:%Y-%m-%d %H:%M:%S %Z}", ""]
    for m in conv.messages:
        lines.append(f"## {ROLE_NAMES.get(m.role, m.role)}")
        lines.append("")
        for image in m.images:
            lines.append(f"![{image.filename}]({image.path.as_posix()})")
            lines.append("")
        lines.append(m.text or "")
        if m.status != "complete":
            lines.append("")
            lines.append(f"*[{m.status}{': ' + m.error if m.error else ''}]*")
        lines.append("")
    return "\n".join(lines)
