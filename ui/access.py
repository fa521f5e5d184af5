"""Who may see what in the web chat: Gradio's login checked against the accounts table, the upload cache kept
private in the data directory, and a middleware in front of Gradio's file route so a stored image is served only to
a user whose conversation shows it. `ui.web.launch_options` wires them into `demo.launch`:

    private_uploads(settings)                      # before build_demo: GRADIO_TEMP_DIR, umask 077
    demo.launch(auth=login_check(settings, accounts),
                app_kwargs={"middleware": [Middleware(PrivateFiles, hidden=[image_dir], cache=..., owned=...)]})
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio

from bot.accounts import Accounts
from settings import Settings


def private_uploads(settings: Settings) -> Path:
    """Put Gradio's upload cache in `<data_dir>/uploads` (0700) and make what this process writes private (umask
    077: files 0600, folders 0700). Call before `build_demo`: Gradio reads GRADIO_TEMP_DIR when blocks are made."""
    folder = (settings.data_dir / "uploads").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    os.umask(0o077)
    return folder


def login_check(settings: Settings, accounts: Accounts | None) -> Callable[[str, str], bool] | None:
    """Gradio's `auth=`: a user of the accounts table (scrypt, constant-time compare), or the --auth-user login.
    None when there is neither (no login: local use)."""
    legacy = None
    if settings.auth_user and settings.auth_password:
        legacy = (settings.auth_user, settings.auth_password.get_secret_value())
    if legacy is None and not (accounts and accounts.exists()):
        return None

    def check(name: str, password: str) -> bool:
        if legacy is not None:
            same_name = hmac.compare_digest(name.encode("utf-8"), legacy[0].encode("utf-8"))
            same_password = hmac.compare_digest(password.encode("utf-8"), legacy[1].encode("utf-8"))
            if same_name and same_password:
                return True
        return bool(accounts) and accounts.check(name, password)

    return check


class PrivateFiles:
    """ASGI middleware in front of Gradio's file route (`/gradio_api/file=PATH`):

    - the stored images' folder is never served by path (`<image_dir>/<sha>.jpg` -> 404 for everyone);
    - with a login, Gradio's cached copy of a stored image (`<upload cache>/<hash>/<sha>.jpg`, the URL the chat
      shows) is served only to a user one of whose conversations shows that image; to anyone else: 404.
    """

    def __init__(self, app: Any, hidden: list[Path], cache: Path | None = None,
                 owned: Callable[[str, str], bool | None] | None = None):
        self.app = app
        self.hidden = [str(p.resolve()) for p in hidden]
        self.cache = str(cache.resolve()) if cache else None
        self.owned = owned  # (sha256, user) -> does a conversation of user show it (None: not a stored image)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "/file=" in scope.get("path", "") and not await self._allowed(scope):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"not found"})
            return
        await self.app(scope, receive, send)

    async def _allowed(self, scope: dict) -> bool:
        target = scope["path"].split("/file=", 1)[1]
        try:
            path = Path(unquote(target)).resolve()
        except (OSError, ValueError):
            return False
        if any(_inside(path, folder) for folder in self.hidden):
            return False
        app = scope.get("app")
        if (self.owned is None or self.cache is None or not _inside(path, self.cache)
                or not STORED_NAME.fullmatch(path.name) or getattr(app, "auth", None) is None):
            return True  # no login (local use), or not a stored image's copy: Gradio decides as usual
        from starlette.requests import HTTPConnection

        cookies = HTTPConnection(scope).cookies
        token = (cookies.get(f"access-token-{app.cookie_id}")
                 or cookies.get(f"access-token-unsecure-{app.cookie_id}"))
        user = app.tokens.get(token) if token else None
        if user is None:
            return False
        sha = path.name.split(".", 1)[0]
        owned = await anyio.to_thread.run_sync(self.owned, sha, user)
        return owned is not False


STORED_NAME = re.compile(r"[0-9a-f]{64}\.[a-z]{3,4}")  # how the image store names files: <sha256>.<ext>


def _inside(path: Path, folder: str) -> bool:
    text = str(path)
    return text == folder or text.startswith(folder.rstrip(os.sep) + os.sep)
