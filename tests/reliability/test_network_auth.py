"""A network bind without working authentication refuses to start, with a one-line reason (issue 15, item 1).

Runs the real entry points (`python app.py`, `python app.py serve`, `python -m server`) as subprocesses; each must
exit with status 2 before loading a model, and a loopback bind with no login still starts (checked in-process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from settings import Settings, api_auth_problem, web_auth_problem

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEGLM_")}


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *args, "--port", free_port(), "--data-dir", str(tmp_path)], cwd=ROOT,
                              env={**ENV, **env}, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:  # it started listening instead of refusing
        pytest.fail(f"{args} did not refuse to start: {exc.stdout!r}")


REFUSED = [
    (["app.py", "--host", "0.0.0.0", "--auth-user", "analyst"], {}, "--auth-password"),
    (["app.py", "--host", "0.0.0.0"], {}, "without a login"),
    (["app.py", "--host", "0.0.0.0", "--auth-user", "analyst"], {"REMOTEGLM_AUTH_PASSWORD": ""}, "--auth-password"),
    (["app.py", "--auth-user", "analyst"], {}, "--auth-password"),  # half a login is refused on loopback too
    (["app.py", "--host", "::"], {"REMOTEGLM_AUTH_PASSWORD": "pw"}, "--auth-user"),
    (["app.py", "serve", "--host", "0.0.0.0"], {}, "without an API key"),
    (["-m", "server", "--host", "0.0.0.0"], {}, "without an API key"),
]


@pytest.mark.parametrize("args,env,reason", REFUSED, ids=[" ".join(a) + str(e) for a, e, _ in REFUSED])
def test_network_bind_without_working_auth_refuses_to_start(tmp_path, args, env, reason):
    result = run(args, tmp_path, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("错误 error:") and reason in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_working_auth_or_loopback_may_start():
    assert web_auth_problem(Settings(host="127.0.0.1")) is None
    assert web_auth_problem(Settings(host="0.0.0.0", auth_user="analyst", auth_password="pw")) is None
    assert web_auth_problem(Settings(host="0.0.0.0"), has_accounts=True) is None  # `python app.py users add`
    assert "without a login" in web_auth_problem(Settings(host="0.0.0.0"), has_accounts=False)
    assert "--auth-password" in web_auth_problem(Settings(host="0.0.0.0", auth_user="analyst"), has_accounts=True)
    assert api_auth_problem(Settings(host="127.0.0.1")) is None
    assert api_auth_problem(Settings(host="0.0.0.0", api_key="sk-x")) is None
