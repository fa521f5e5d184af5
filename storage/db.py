"""Engine and session factory for any SQLAlchemy URL; SQLite gets WAL, foreign keys and a busy timeout.

    engine = make_engine("sqlite:///remoteglm.db")      # or postgresql+psycopg://user:pw@host/db
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from storage.models import Base


class DatabaseError(RuntimeError):
    """The database cannot be reached or opened; the message names the URL and the fix."""


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        Base.metadata.create_all(engine)
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot open the database {parsed.render_as_string(hide_password=True)}: {exc.orig}. "
            "Check --database-url / REMOTEGLM_DATABASE_URL and that the server is running"
        ) from exc
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer (UI + server threads)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; commits no longer fsync twice
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
