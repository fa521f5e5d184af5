"""The agent's LangGraph thread: the checkpointer on the store's database and the thread's messages.

The planner's thread (questions, tool calls, tool results, answers) is kept by a LangGraph checkpointer, thread_id =
conversation id: `langgraph-checkpoint-sqlite` in the store's SQLite file (its own `checkpoints` / `writes` tables
beside the store's), `langgraph-checkpoint-postgres` on the store's PostgreSQL URL. Thread messages carry the ids of
the stored messages they stand for (and image references, never pixels), so the agent can tell which stored turns
the thread already holds (`bot/agent.py`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from sqlalchemy.engine import make_url

from storage import ImageRef

MESSAGE_ID, IMAGES, ANSWER_ID = "remoteglm_message_id", "remoteglm_images", "remoteglm_answer_id"
STATE_KEY = "agent"  # conversation.settings[STATE_KEY]: the scene and view of an agent conversation


def open_checkpointer(database_url: str) -> BaseCheckpointSaver:
    """A LangGraph checkpointer on a SQLAlchemy-style URL: SqliteSaver on the same file (its tables `checkpoints`
    and `writes` sit beside the store's, WAL like the store), PostgresSaver on a small connection pool for
    postgresql[+driver]://, an in-memory saver for an in-memory SQLite URL. Release it with `close_checkpointer`."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            return InMemorySaver()
        # check_same_thread=False is safe: SqliteSaver serialises its calls with a lock (UI and server threads).
        saver = SqliteSaver(sqlite3.connect(url.database, check_same_thread=False, timeout=30))
    elif backend == "postgresql":
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        pool = ConnectionPool(conninfo, min_size=1, max_size=4, open=True, check=ConnectionPool.check_connection,
                              kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        saver = PostgresSaver(pool)
    else:
        raise ValueError(f"agent checkpoints need a sqlite:/// or postgresql:// URL, not {backend!r} "
                         "(set REMOTEGLM_AGENT_CHECKPOINT_URL)")
    saver.setup()  # creates the tables / runs LangGraph's migrations once; idempotent
    return saver


def delete_thread(database_url: str, conversation_id: str) -> None:
    """Delete an agent conversation's thread from the checkpointer on `database_url` (the web chat deletes agent
    conversations too; the agent's own `delete` uses its open checkpointer)."""
    saver = open_checkpointer(database_url)
    try:
        saver.delete_thread(conversation_id)
    finally:
        close_checkpointer(saver)


def close_checkpointer(saver: BaseCheckpointSaver) -> None:
    conn = getattr(saver, "conn", None)  # sqlite3.Connection or psycopg_pool.ConnectionPool
    if conn is not None:
        conn.close()


def thread_config(conversation_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": conversation_id}}


def message_refs(message_id: int, images: list[ImageRef]) -> dict[str, Any]:
    """What a thread message keeps of its stored message: the id and image references (sha256, file, size), never
    the pixels; OpenAI-style planners are not sent these (only role and content)."""
    refs: dict[str, Any] = {MESSAGE_ID: message_id}
    if images:
        refs[IMAGES] = [{"sha256": r.sha256, "filename": r.filename, "width": r.width, "height": r.height}
                        for r in images]
    return refs


def thread_question(text: str, user_id: int, answer_id: int, images: list[ImageRef] | None = None) -> HumanMessage:
    """The thread's message for a stored question (user_id) whose answer will be stored as answer_id: the thread
    then knows both stored turns, and the next agent turn adds only what was stored after them."""
    return HumanMessage(text, additional_kwargs={**message_refs(user_id, images or []), ANSWER_ID: answer_id})
