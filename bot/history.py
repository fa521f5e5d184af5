"""RemoteGLMChatMessageHistory: a LangChain chat message history over the project's ConversationStore.

Messages (images included) go to the same SQLAlchemy tables the web chat reads, so a conversation started in
LangChain appears in the sidebar and can be continued there, and the other way round.

    store = ConversationStore.from_settings(Settings())
    history = RemoteGLMChatMessageHistory(store)           # new conversation; history.conversation_id names it
    history.add_messages([HumanMessage("你好"), AIMessage("你好！")])
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from bot.chat_model import image_bytes_from_block
from storage.repository import ConversationStore

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}
_CLASSES = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}


class RemoteGLMChatMessageHistory(BaseChatMessageHistory):
    def __init__(self, store: ConversationStore, conversation_id: str | None = None, title: str = "LangChain"):
        self.store = store
        self.conversation_id = conversation_id or store.create(title=title).id
        store.get(self.conversation_id)  # raises storage.repository.NotFound for an unknown id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        out: list[BaseMessage] = []
        for message in self.store.get(self.conversation_id).messages:
            cls = _CLASSES.get(message.role)
            if cls is None:
                continue
            if not message.images:
                out.append(cls(content=message.text))
                continue
            blocks: list = [{"type": "text", "text": message.text}] if message.text else []
            for ref in message.images:
                mime = "image/png" if ref.filename.endswith(".png") else "image/jpeg"
                blocks.append({"type": "image", "base64": base64.b64encode(ref.path.read_bytes()).decode(),
                               "mime_type": mime})
            out.append(cls(content=blocks))
        return out

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store the messages in order. All are checked (roles, blocks, images decodable) before the first is
        stored, so a bad one stores none of them."""
        turns = []
        for message in messages:
            role = _ROLES.get(message.type)
            if role is None:
                raise ValueError(f"RemoteGLMChatMessageHistory stores human/ai/system messages, not {message.type!r}")
            texts, images = [], []
            for block in [message.content] if isinstance(message.content, str) else message.content:
                if isinstance(block, str):
                    texts.append(block)
                elif block.get("type") == "text":
                    texts.append(block["text"])
                elif block.get("type") in ("image", "image_url"):
                    images.append(self.store.add_image(image_bytes_from_block(block)))  # ImageError: not an image
                else:
                    raise ValueError(f"unsupported content block type {block.get('type')!r}")
            turns.append((role, "\n".join(texts), images))
        for role, text, images in turns:
            self.store.append_message(self.conversation_id, role, text, images=images)

    def clear(self) -> None:
        for message in self.store.get(self.conversation_id).messages:
            self.store.delete_message(message.id)

