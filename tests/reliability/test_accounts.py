"""User accounts and the boundaries between users (issue 15 item 4): scrypt hashes, `python app.py users ...`,
per-user conversations in the store, an older database that keeps opening, and over HTTP with two real logins:
another user's conversation reads as missing, stored images are not served by path, uploads land in the data
directory's private upload folder."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect as sa_inspect
from sqlalchemy.engine import make_url

from storage import AccountError, Accounts, ConversationStore, NotFound
from storage.accounts import hash_password, verify_password
from storage.models import Base
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
AIRPLANE = FIXTURES / "ucm" / "airplane_192.jpg"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEGLM_")}


def test_password_hash_is_salted_scrypt_with_its_parameters():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # a salt of its own per hash
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p, len(bytes.fromhex(salt)), len(bytes.fromhex(key))) == ("scrypt", "16384", "8", "1", 16, 32)
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct horsf", first) and not verify_password("", first)
    assert not verify_password("correct horse", "garbage") and not verify_password("x", "scrypt$1$2$3$zz$zz")
    cheap = hash_password("pw-for-cheap", n=2 ** 10)  # the parameters stored with a hash are the ones it checks with
    assert cheap.split("$")[1] == "1024" and verify_password("pw-for-cheap", cheap)


def users(tmp_path: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, **({"REMOTEGLM_NEW_PASSWORD": password} if password else {})}
    return subprocess.run([sys.executable, "app.py", "users", *args, "--data-dir", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_users_command_adds_lists_changes_and_deletes(tmp_path):
    assert users(tmp_path, "add", "alice", "--admin", password="alice-pass-1").returncode == 0
    assert users(tmp_path, "add", "bob", password="bob-pass-12").returncode == 0
    listed = users(tmp_path, "list").stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["alice", "admin"], ["bob", "user"]]
    for args, password, reason in [(("add", "alice"), "another-pass", "exists already"),
                                   (("add", "carol"), "short", "at least 8"),
                                   (("add", "bad name"), "long-enough", "user name"),
                                   (("add", "carol"), None, "REMOTEGLM_NEW_PASSWORD"),
                                   (("delete", "nobody"), None, "no user nobody"),
                                   (("passwd",), None, "usage")]:
        result = users(tmp_path, *args, password=password)
        assert result.returncode == 2 and reason in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert users(tmp_path, "passwd", "bob", password="bob-new-pass").returncode == 0
    store = ConversationStore(f"sqlite:///{tmp_path / 'remoteglm.db'}", tmp_path / "images")
    accounts = Accounts(store.sessions)
    assert accounts.check("bob", "bob-new-pass") and not accounts.check("bob", "bob-pass-12")
    assert accounts.check("alice", "alice-pass-1") and not accounts.check("nobody", "alice-pass-1")
    assert users(tmp_path, "delete", "bob").returncode == 0
    assert [a.name for a in accounts.list()] == ["alice"] and not accounts.check("bob", "bob-new-pass")
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A real SQLite file, or a throwaway database of its own on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'remoteglm.db'}"
        return
    server = os.environ.get("REMOTEGLM_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("REMOTEGLM_TEST_POSTGRES_URL is not set")
    name = f"accounts_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_each_user_sees_only_their_own_conversations(database_url, tmp_path):
    store = ConversationStore(database_url, tmp_path / "images")
    mine = store.create(title="机场 airport", owner="alice")
    theirs = store.create(title="机场 harbour", owner="bob")
    image = store.add_image(AIRPLANE.read_bytes(), original_name="airplane.jpg")
    store.append_message(mine.id, "user", "图中有多少架飞机？", images=[image])
    store.append_message(theirs.id, "user", "图中有多少架飞机？", images=[image])
    assert [c.id for c in store.list(owner="alice")] == [mine.id]
    assert [c.id for c in store.list(owner="alice", query="飞机")] == [mine.id]  # search is scoped too
    assert {c.id for c in store.list()} == {mine.id, theirs.id}  # no login (local use): everything
    assert store.count(owner="bob") == 1 and store.count() == 2
    assert store.get(theirs.id, owner="bob").messages[0].images[0].sha256 == image.sha256
    for call in (lambda: store.get(theirs.id, owner="alice"), lambda: store.check_owner(theirs.id, "alice"),
                 lambda: store.check_owner("0" * 32, "alice")):
        with pytest.raises(NotFound, match="no conversation"):  # another user's id reads like a missing one
            call()
    store.delete(theirs.id)
    assert store.owner_of(theirs.id) is None and store.images.path(image.filename).exists()  # alice still uses it
    store.close()


def test_an_older_database_keeps_opening_and_its_conversations_can_be_claimed(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    old_tables = [t for name, t in Base.metadata.tables.items() if name not in ("user_account", "conversation_owner")]
    Base.metadata.create_all(engine, tables=old_tables)  # the schema before accounts
    engine.dispose()
    store = ConversationStore(url, tmp_path / "images", recover=False)
    old = store.create(title="before accounts")  # no owner row: the local user's
    store.close()
    store = ConversationStore(url, tmp_path / "images")  # opening it again adds the new tables, alters nothing
    assert {"user_account", "conversation_owner"} <= set(sa_inspect(store.engine).get_table_names())
    assert [c.id for c in store.list()] == [old.id] and store.list(owner="alice") == []
    Accounts(store.sessions).add("alice", "alice-pass-1")
    assert store.claim("alice") == 1 and store.claim("bob") == 0
    assert [c.id for c in store.list(owner="alice")] == [old.id] and store.get(old.id).title == "before accounts"
    with pytest.raises(AccountError):
        Accounts(store.sessions).add("alice", "other-pass-1")
    store.close()
