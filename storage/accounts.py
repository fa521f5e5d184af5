"""User accounts of the web chat: names, scrypt password hashes (hashlib, per-user salt, parameters stored with
the hash), an admin flag. The admin manages them from the command line (`python app.py users ...`).

    accounts = Accounts(store.sessions)
    accounts.add("alice", "correct horse", admin=True)
    accounts.check("alice", "correct horse")   # True (constant-time compare)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from storage.models import ConversationOwner, UserAccount

# scrypt cost: n=2**14, r=8, p=1 (128·n·r bytes = 16 MiB per check); stored with each hash, so raising it later
# leaves existing hashes valid.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD = 8


class AccountError(ValueError):
    """A user name or password that cannot be used, or an unknown user; the message says why (bilingual)."""


@dataclass(frozen=True)
class AccountView:
    name: str
    is_admin: bool
    created_at: datetime
    conversations: int = 0


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(key)
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=256 * 1024 * 1024, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise AccountError(f"用户名只能由 1-64 个字母、数字和 _ . @ - 组成 (a user name is 1-64 letters, digits or "
                           f"_ . @ -): {name!r}")
    return name


def check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise AccountError(f"密码至少 {MIN_PASSWORD} 个字符 (a password needs at least {MIN_PASSWORD} characters)")
    return password


# A check for a name that does not exist still runs scrypt, so the time taken does not tell which names exist.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


class Accounts:
    """The `user_account` table (and who owns which conversation) over a store's session factory."""

    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    def add(self, name: str, password: str, admin: bool = False) -> AccountView:
        check_name(name)
        check_password(password)
        try:
            with self.sessions.begin() as session:
                row = UserAccount(name=name, password_hash=hash_password(password), is_admin=admin)
                session.add(row)
                session.flush()
                return AccountView(row.name, row.is_admin, row.created_at)
        except IntegrityError as exc:
            raise AccountError(f"用户 {name} 已存在 (user {name} exists already)") from exc

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        with self.sessions.begin() as session:
            result = session.execute(update(UserAccount).where(UserAccount.name == name)
                                     .values(password_hash=hash_password(password)))
            if not result.rowcount:
                raise AccountError(f"没有用户 {name} (no user {name})")

    def delete(self, name: str) -> None:
        """Remove the login; the user's conversations stay stored (with their owner's name) and come back if an
        account of that name is added again."""
        with self.sessions.begin() as session:
            result = session.execute(delete(UserAccount).where(UserAccount.name == name))
            if not result.rowcount:
                raise AccountError(f"没有用户 {name} (no user {name})")

    def list(self) -> list[AccountView]:
        with self.sessions() as session:
            counts: dict[str, int] = {}
            for owner in session.scalars(select(ConversationOwner.owner)):
                counts[owner] = counts.get(owner, 0) + 1
            return [AccountView(r.name, r.is_admin, r.created_at, counts.get(r.name, 0))
                    for r in session.scalars(select(UserAccount).order_by(UserAccount.name))]

    def exists(self) -> bool:
        with self.sessions() as session:
            return session.scalars(select(UserAccount.id).limit(1)).first() is not None

    def check(self, name: str, password: str) -> bool:
        """True if `name` has this password (scrypt, then a constant-time compare)."""
        with self.sessions() as session:
            stored = session.scalars(select(UserAccount.password_hash).where(UserAccount.name == name)).first()
        ok = verify_password(password or "", stored or _DUMMY_HASH)
        return ok and stored is not None
