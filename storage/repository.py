"""ConversationStore: every operation the UI, CLI, API server and agent need on stored conversations.

It hands out plain dataclasses (`ConversationView`, `MessageView`, `ImageRef`), never live ORM objects, so callers
in any thread can keep them after the session closed. Works on any SQLAlchemy URL.

    store = ConversationStore.from_settings(Settings())
    conv = store.create(title="机场")
    image = store.add_image(Path("airport.jpg").read_bytes(), original_name="airport.jpg")
    store.append_message(conv.id, "user", "这张遥感图像展现了什么场景？", images=[image])
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from imagery import ImageSource
from settings import Settings
from storage.db import make_engine, make_sessionmaker
from storage.images import ImageStore
from storage.thumbnails import Thumbnails
from storage.models import (AnswerAlternative, Conversation, ConversationOwner, Message, MessageImage, StoredImage,
                            utcnow)

MESSAGE_STATUSES = ("complete", "streaming", "interrupted", "error")
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
INTERRUPTED_BY_RESTART = "the process stopped while this answer was being written; the partial text is kept"

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A write failed (full disk, unwritable database); nothing of that write was stored. Bilingual message."""


class NotFound(LookupError):
    """No conversation or message with that id."""


@dataclass(frozen=True)
class ImageRef:
    sha256: str
    filename: str
    path: Path
    width: int
    height: int


@dataclass
class AlternativeView:
    """An earlier answer to a question (it was answered again); `question` is the question's text back then."""

    id: int
    question: str
    text: str
    status: str
    created_at: datetime
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None


@dataclass
class MessageView:
    id: int
    role: str
    text: str
    status: str
    images: list[ImageRef]
    created_at: datetime
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    alternatives: list[AlternativeView] = field(default_factory=list)  # a question's earlier answers, oldest first


@dataclass
class ConversationView:
    id: str
    title: str
    model: str | None
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    messages: list[MessageView] = field(default_factory=list)  # filled by get(), empty in list()


class ConversationStore:
    def __init__(self, database_url: str, image_dir: Path, max_pixels: int = 1024 * 1024, recover: bool = True):
        self.engine = make_engine(database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.images = ImageStore(image_dir, max_pixels)
        self.thumbnails = Thumbnails(self.images)
        self.location = image_dir
        if recover:
            self.recover_interrupted()

    def recover_interrupted(self) -> int:
        """At start-up: answers still 'streaming' were cut off by a crash or kill; mark them 'interrupted' with
        their partial text kept. Returns how many. (A sibling process still streaming into a shared database puts
        its answer back to 'streaming' with its next write, see bot.service.)"""
        with self._begin() as session:
            result = session.execute(update(Message).where(Message.status == "streaming").values(
                status="interrupted", error=INTERRUPTED_BY_RESTART, updated_at=utcnow()))
        if result.rowcount:
            log.warning("%d answers left 'streaming' by an earlier process are now 'interrupted'", result.rowcount)
        return result.rowcount or 0

    @contextmanager
    def _begin(self) -> Iterator[Session]:
        """A write transaction whose disk-full / unwritable-database failures become a StorageError."""
        try:
            with self.sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise StorageError(_storage_message(exc, self.location)) from exc
        except OSError as exc:
            if exc.errno in FULL_DISK_ERRNOS:
                raise StorageError(_storage_message(exc, self.location)) from exc
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationStore:
        return cls(settings.resolved_database_url, settings.resolved_image_dir, settings.max_image_pixels)

    def close(self) -> None:
        self.engine.dispose()

    # --- conversations ---------------------------------------------------------------------------------------------
    def create(self, title: str = "", model: str | None = None, settings: dict[str, Any] | None = None,
               owner: str | None = None) -> ConversationView:
        """A new conversation; with `owner` (a user name) it belongs to that user (see `check_owner`)."""
        with self._begin() as session:
            conv = Conversation(title=title[:200], model=model, settings=dict(settings or {}))
            session.add(conv)
            session.flush()
            if owner is not None:
                session.add(ConversationOwner(conversation_id=conv.id, owner=owner))
            return _conversation_view(conv)

    def check_owner(self, conversation_id: str, owner: str | None) -> None:
        """NotFound unless the conversation exists and, when `owner` is given, belongs to that user (another
        user's conversation reads exactly like a missing one). owner=None (no login, local use): any."""
        with self.sessions() as session:
            if owner is None:
                self._conversation(session, conversation_id)
                return
            row = session.get(ConversationOwner, conversation_id)
            if row is None or row.owner != owner:
                raise NotFound(f"no conversation {conversation_id}")

    def owner_of(self, conversation_id: str) -> str | None:
        with self.sessions() as session:
            row = session.get(ConversationOwner, conversation_id)
            return row.owner if row else None

    def image_owned(self, sha256: str, owner: str) -> bool | None:
        """Whether a message of one of `owner`'s conversations shows this stored image; None if no stored image
        has this hash (not ours to judge)."""
        with self.sessions() as session:
            if session.get(StoredImage, sha256) is None:
                return None
            used = session.scalars(
                select(MessageImage.message_id).join(Message, Message.id == MessageImage.message_id)
                .join(ConversationOwner, ConversationOwner.conversation_id == Message.conversation_id)
                .where(MessageImage.image_sha256 == sha256, ConversationOwner.owner == owner).limit(1)
            ).first()
            return used is not None

    def claim(self, owner: str) -> int:
        """Give every conversation that has no owner yet (made before accounts existed) to `owner`; how many."""
        with self._begin() as session:
            owned = select(ConversationOwner.conversation_id)
            ids = list(session.scalars(select(Conversation.id).where(Conversation.id.not_in(owned))))
            session.add_all(ConversationOwner(conversation_id=cid, owner=owner) for cid in ids)
            return len(ids)

    def list(self, limit: int = 50, offset: int = 0, query: str = "",
             owner: str | None = None) -> list[ConversationView]:
        """Newest activity first; with `query`, only conversations whose title or any message text contains it
        (case-insensitive); with `owner`, only that user's."""
        with self.sessions() as session:
            statement = select(Conversation)
            if owner is not None:
                statement = statement.join(ConversationOwner, ConversationOwner.conversation_id == Conversation.id
                                           ).where(ConversationOwner.owner == owner)
            query = query.strip()
            if query:
                pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                in_messages = select(Message.id).where(Message.conversation_id == Conversation.id,
                                                       Message.text.ilike(pattern, escape="\\"))
                statement = statement.where(Conversation.title.ilike(pattern, escape="\\") | in_messages.exists())
            rows = session.scalars(
                statement.order_by(Conversation.updated_at.desc(), Conversation.id).limit(limit).offset(offset)
            )
            return [_conversation_view(c) for c in rows]

    def first_image(self, conversation_id: str) -> ImageRef | None:
        """The first image of a conversation's messages, or None."""
        with self.sessions() as session:
            row = session.scalars(
                select(StoredImage).join(MessageImage, MessageImage.image_sha256 == StoredImage.sha256)
                .join(Message, Message.id == MessageImage.message_id)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id, MessageImage.position).limit(1)
            ).first()
            return self._ref(row) if row else None

    def first_images(self, conversation_ids: Sequence[str]) -> dict[str, ImageRef]:
        """The first image of each of these conversations (those without one are left out), in one query."""
        if not conversation_ids:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(Message.conversation_id, StoredImage)
                .join(MessageImage, MessageImage.message_id == Message.id)
                .join(StoredImage, StoredImage.sha256 == MessageImage.image_sha256)
                .where(Message.conversation_id.in_(list(conversation_ids)))
                .order_by(Message.id.desc(), MessageImage.position.desc())
            ).all()
            return {conversation_id: self._ref(row) for conversation_id, row in rows}  # the first one wins last

    def thumbnail(self, ref: ImageRef) -> bytes | None:
        """A small square JPEG of a stored image (made once, then read back), or None if it cannot be read."""
        return self.thumbnails.get(ref)

    def count(self, owner: str | None = None) -> int:
        with self.sessions() as session:
            if owner is not None:
                return session.scalar(select(func.count()).select_from(ConversationOwner)
                                      .where(ConversationOwner.owner == owner)) or 0
            return session.scalar(select(func.count()).select_from(Conversation)) or 0

    def get(self, conversation_id: str, owner: str | None = None) -> ConversationView:
        """The conversation with its messages; NotFound if it is missing or (with `owner`) another user's."""
        if owner is not None:
            self.check_owner(conversation_id, owner)
        with self.sessions() as session:
            conv = self._conversation(session, conversation_id)
            messages = session.scalars(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
            ).all()
            images = self._image_rows(session, messages)
            earlier: dict[int, list[AlternativeView]] = {}
            for row in session.scalars(
                select(AnswerAlternative).join(Message, Message.id == AnswerAlternative.question_id)
                .where(Message.conversation_id == conversation_id).order_by(AnswerAlternative.id)
            ):
                earlier.setdefault(row.question_id, []).append(_alternative_view(row))
            view = _conversation_view(conv)
            view.messages = [self._message_view(m, images) for m in messages]
            for message in view.messages:
                message.alternatives = earlier.get(message.id, [])
            return view

    def rename(self, conversation_id: str, title: str) -> None:
        self._update_conversation(conversation_id, title=title.strip()[:200])

    def update_settings(self, conversation_id: str, settings: dict[str, Any]) -> None:
        self._update_conversation(conversation_id, settings=dict(settings))

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation, its messages, and image files that no other message uses."""
        with self._begin() as session:
            conv = self._conversation(session, conversation_id)
            shas = set(session.scalars(
                select(MessageImage.image_sha256).join(Message).where(Message.conversation_id == conversation_id)
            ))
            in_conversation = select(Message.id).where(Message.conversation_id == conversation_id)
            session.execute(delete(MessageImage).where(MessageImage.message_id.in_(in_conversation)))
            session.execute(delete(AnswerAlternative).where(AnswerAlternative.question_id.in_(in_conversation)))
            session.execute(delete(Message).where(Message.conversation_id == conversation_id))
            session.execute(delete(ConversationOwner).where(ConversationOwner.conversation_id == conversation_id))
            session.delete(conv)
            orphans = self._drop_orphan_images(session, shas)
        self._delete_files(orphans)

    # --- messages ------------------------------------------------------------------------------------------------------
    def add_image(self, source: ImageSource, original_name: str | None = None,
                  bands: Sequence[int] | str | None = None) -> ImageRef:
        """Store an image once (by content hash); `bands` picks a multi-band TIFF's bands (1-based).
        Raises model_adapter.ImageError for unusable input, StorageError when the disk is full."""
        try:
            record, _ = self.images.put(source, bands)
        except OSError as exc:
            if exc.errno in FULL_DISK_ERRNOS:
                raise StorageError(_storage_message(exc, self.location)) from exc
            raise
        try:
            with self._begin() as session:
                if session.get(StoredImage, record.sha256) is None:
                    session.add(StoredImage(
                        sha256=record.sha256, filename=record.filename, width=record.width, height=record.height,
                        size_bytes=record.size_bytes, original_name=(original_name or "")[:255] or None,
                    ))
        except IntegrityError:
            pass  # another thread or replica stored the same image a moment ago
        return ImageRef(record.sha256, record.filename, self.images.path(record.filename), record.width, record.height)

    def append_message(
        self, conversation_id: str, role: str, text: str, images: list[ImageRef] | tuple = (),
        status: str = "complete", **stats: Any,
    ) -> MessageView:
        _check_status(status)
        with self._begin() as session:
            self._conversation(session, conversation_id)
            message = Message(conversation_id=conversation_id, role=role, text=text, status=status, **stats)
            message.images = [MessageImage(position=i, image_sha256=ref.sha256) for i, ref in enumerate(images)]
            session.add(message)
            session.execute(update(Conversation).where(Conversation.id == conversation_id).values(updated_at=utcnow()))
            session.flush()
            return MessageView(message.id, role, text, status, list(images), message.created_at, **stats)

    def update_message(self, message_id: int, **values: Any) -> None:
        """Change text / status / error / token counts / latency of a message in place (streaming updates)."""
        if "status" in values:
            _check_status(values["status"])
        with self._begin() as session:
            result = session.execute(update(Message).where(Message.id == message_id).values(**values, updated_at=utcnow()))
            if result.rowcount == 0:
                raise NotFound(f"no message {message_id}")

    def keep_as_alternative(self, answer_id: int) -> AlternativeView:
        """Move an assistant message out of the conversation into the earlier answers of the question before it
        (one transaction: the answer is never both gone and unkept). The question is then answered anew."""
        with self._begin() as session:
            answer = session.get(Message, answer_id)
            if answer is None or answer.role != "assistant":
                raise NotFound(f"no answer {answer_id}")
            question = session.scalars(
                select(Message).where(Message.conversation_id == answer.conversation_id, Message.role == "user",
                                      Message.id < answer_id).order_by(Message.id.desc()).limit(1)
            ).first()
            if question is None:
                raise NotFound(f"answer {answer_id} answers no question")
            row = AnswerAlternative(
                question_id=question.id, question=question.text, text=answer.text, status=answer.status,
                error=answer.error, prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                latency_ms=answer.latency_ms, created_at=answer.created_at,
            )
            session.add(row)
            session.delete(answer)
            session.flush()
            return _alternative_view(row)

    def delete_message(self, message_id: int) -> None:
        with self._begin() as session:
            message = session.get(Message, message_id)
            if message is None:
                raise NotFound(f"no message {message_id}")
            shas = {link.image_sha256 for link in message.images}
            session.delete(message)
            session.flush()
            orphans = self._drop_orphan_images(session, shas)
        self._delete_files(orphans)

    def open_image(self, ref: ImageRef) -> Image.Image:
        return self.images.open(ref.filename)

    # --- helpers ------------------------------------------------------------------------------------------------------
    def _delete_files(self, filenames: list[str]) -> None:
        for filename in filenames:
            self.images.delete(filename)
            self.thumbnails.delete(Path(filename).stem)

    @staticmethod
    def _conversation(session: Session, conversation_id: str) -> Conversation:
        conv = session.get(Conversation, conversation_id)
        if conv is None:
            raise NotFound(f"no conversation {conversation_id}")
        return conv

    def _update_conversation(self, conversation_id: str, **values: Any) -> None:
        with self._begin() as session:
            result = session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(**values, updated_at=utcnow())
            )
            if result.rowcount == 0:
                raise NotFound(f"no conversation {conversation_id}")

    @staticmethod
    def _image_rows(session: Session, messages: list[Message]) -> dict[str, StoredImage]:
        shas = {link.image_sha256 for m in messages for link in m.images}
        if not shas:
            return {}
        return {row.sha256: row for row in session.scalars(select(StoredImage).where(StoredImage.sha256.in_(shas)))}

    def _message_view(self, m: Message, images: dict[str, StoredImage]) -> MessageView:
        refs = [self._ref(images[link.image_sha256]) for link in m.images]
        return MessageView(m.id, m.role, m.text, m.status, refs, m.created_at, m.error, m.prompt_tokens,
                           m.completion_tokens, m.latency_ms)

    def _ref(self, row: StoredImage) -> ImageRef:
        return ImageRef(row.sha256, row.filename, self.images.path(row.filename), row.width, row.height)

    @staticmethod
    def _drop_orphan_images(session: Session, shas: set[str]) -> list[str]:
        """Delete image rows among `shas` that no message links any more; return their filenames."""
        if not shas:
            return []
        still_used = set(session.scalars(select(MessageImage.image_sha256).where(MessageImage.image_sha256.in_(shas))))
        orphans = session.scalars(select(StoredImage).where(StoredImage.sha256.in_(shas - still_used))).all()
        filenames = [row.filename for row in orphans]
        for row in orphans:
            session.delete(row)
        return filenames


def _conversation_view(conv: Conversation) -> ConversationView:
    return ConversationView(conv.id, conv.title, conv.model, dict(conv.settings or {}), conv.created_at, conv.updated_at)


def _alternative_view(row: AnswerAlternative) -> AlternativeView:
    return AlternativeView(row.id, row.question, row.text, row.status, row.created_at, row.error, row.prompt_tokens,
                           row.completion_tokens, row.latency_ms)


def _storage_message(exc: BaseException, location: Path) -> str:
    cause = getattr(exc, "orig", None) or exc
    if getattr(cause, "errno", None) in FULL_DISK_ERRNOS or "full" in str(cause).lower():
        return (f"磁盘已满，本次内容未保存，已保存的对话不受影响；请释放 {location} 所在磁盘的空间 "
                f"(the disk is full: this was not saved, stored conversations are unaffected; free space on the disk "
                f"holding {location})")
    return f"无法写入数据库，本次内容未保存 (cannot write to the database, this was not saved: {cause})"


def _check_status(status: str) -> None:
    if status not in MESSAGE_STATUSES:
        raise ValueError(f"message status must be one of {MESSAGE_STATUSES}, not {status!r}")
