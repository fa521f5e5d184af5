"""SQLAlchemy 2 ORM tables: conversations, their messages, the images messages refer to, and earlier answers.

Images live on disk, addressed by SHA-256 (see `storage.images`); the database keeps only the hash and a few
facts about the file. Deleting a conversation deletes its messages (ON DELETE CASCADE) and its links to images;
`ConversationStore.delete` then removes image files no other message uses.

Schema changes are additive: `Base.metadata.create_all` (see `storage.db`) creates a table a database lacks and
never alters an existing one, so a new concept gets a new table (an older database gains it on its next open).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Conversation(TimestampMixin, Base):
    __tablename__ = "conversation"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str | None] = mapped_column(String(500))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # generation settings chosen for it

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Message.id", lazy="raise",
    )

    __table_args__ = (Index("ix_conversation_updated_at", "updated_at"),)


class Message(TimestampMixin, Base):
    __tablename__ = "message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # user / assistant / system
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="complete")  # complete/streaming/interrupted/error
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    latency_ms: Mapped[int | None]

    conversation: Mapped[Conversation] = relationship(back_populates="messages", lazy="raise")
    images: Mapped[list[MessageImage]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="MessageImage.position", lazy="selectin",
    )


class StoredImage(Base):
    __tablename__ = "image"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(80))  # <sha256>.<ext> under the image directory
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int]
    original_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageImage(Base):
    __tablename__ = "message_image"

    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("image.sha256"), index=True)


class AnswerAlternative(Base):
    """An earlier answer to a question, kept when the question was answered again (regenerate, edit): the current
    answer is the `message` row after the question; these stay reachable in the chat and in exports."""

    __tablename__ = "answer_alternative"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(Text, default="")  # the question's text when this answered it
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="complete")
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    latency_ms: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # when the answer was written
    replaced_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserAccount(Base):
    """A web chat login. `password_hash` is `scrypt$<n>$<r>$<p>$<salt hex>$<key hex>` (hashlib.scrypt, a salt of
    its own per user, parameters stored with it: see `storage.accounts`)."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(400))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationOwner(Base):
    """Which user a conversation belongs to (its own table, so older databases gain it without an ALTER). A
    conversation without a row here predates accounts: it is shown only without a login, until
    `python app.py users claim NAME` gives it to a user."""

    __tablename__ = "conversation_owner"

    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
