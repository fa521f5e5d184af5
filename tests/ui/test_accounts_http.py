"""Two users logged in to the real `python app.py` over HTTP (issue 15 item 4): each sees only their own
conversations, another user's conversation id reads as missing, a stored image is never served by its path, and
uploads land in `<data_dir>/uploads` with private modes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from storage import ConversationStore
from tests.conftest import FIXTURES
from tests.ui.conftest import AppProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
AIRPLANE = str(FIXTURES / "ucm" / "airplane_192.jpg")
HARBOR = str(FIXTURES / "ucm" / "harbor_1092.jpg")
GEN = ("zh", 0.0, 0.4, 8)
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-12"}
LEGACY = "the-old-shared-login"  # --auth-user analyst + REMOTEGLM_AUTH_PASSWORD: one more user beside the accounts


@pytest.fixture(scope="module")
def two_users(tiny_glm4v_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("accounts-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEGLM_")}
    for name, password in PASSWORDS.items():
        subprocess.run([sys.executable, "app.py", "users", "add", name, "--data-dir", str(data)], cwd=ROOT, check=True,
                       env={**env, "REMOTEGLM_NEW_PASSWORD": password}, capture_output=True, timeout=60)
    store = ConversationStore(f"sqlite:///{data / 'remoteglm.db'}", data / "images", recover=False)
    unowned = store.create(title="made before accounts").id  # e.g. by an earlier version, or the terminal chat
    store.close()
    port = free_port()
    process = AppProcess("--model", str(tiny_glm4v_dir), "--data-dir", str(data), "--port", str(port),
                         "--max-new-tokens", "8",
                         env={"REMOTEGLM_AUTH_USER": "analyst", "REMOTEGLM_AUTH_PASSWORD": LEGACY})
    try:
        process.wait_for("ready")
        yield f"http://127.0.0.1:{port}", data, unowned
    finally:
        process.stop()


def logged_in(url: str, name: str) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=30)
    response = http.post("/login", data={"username": name, "password": PASSWORDS[name]})
    assert response.status_code == 200, response.text
    return http


def test_users_are_kept_apart_and_images_are_not_served_by_path(two_users):
    url, data, unowned = two_users
    with pytest.raises(Exception):  # a wrong password gets no session
        Client(url, auth=("alice", "wrong-password"), verbose=False)
    alice = Client(url, auth=("alice", PASSWORDS["alice"]), verbose=False)
    chat, _, sidebar, alice_id = alice.predict({"text": "这张遥感图像展现了什么场景？", "files": [handle_file(AIRPLANE)]},
                                               *GEN, api_name="/chat")
    assert [c[1] for c in sidebar["choices"]] == [alice_id]
    assert chat[0]["content"][0]["type"] == "file"

    bob = Client(url, auth=("bob", PASSWORDS["bob"]), verbose=False)
    _, _, bob_sidebar, bob_id = bob.predict({"text": "图中有多少艘船？", "files": [handle_file(HARBOR)]}, *GEN,
                                            api_name="/chat")
    assert bob_id != alice_id and [c[1] for c in bob_sidebar["choices"]] == [bob_id]
    # alice's id in bob's session: bob's history does not offer it (the handlers' own check: test_handlers)
    with pytest.raises(AppError, match="not in the list of choices"):
        bob.predict(alice_id, "zh", api_name="/open")
    assert [c[1] for c in bob.predict("图", "zh", None, api_name="/search")["choices"]] == [bob_id]
    alice_after = alice.predict(alice_id, "zh", api_name="/open")
    assert len(alice_after[0]) == 2 and alice_after[-1] == alice_id  # nothing of alice's was changed or lost

    service = ConversationStore(f"sqlite:///{data / 'remoteglm.db'}", data / "images", recover=False)
    alice_image = service.get(alice_id).messages[0].images[0].path
    bob_image = service.get(bob_id).messages[0].images[0].path
    service.close()
    as_alice, as_bob = logged_in(url, "alice"), logged_in(url, "bob")
    for http in (as_alice, as_bob):
        for path in (alice_image, bob_image, data / "images" / ".." / "images" / alice_image.name,
                     data / "remoteglm.db"):
            assert http.get(f"/gradio_api/file={path}").status_code in (403, 404)  # never by path
    # the chat shows an image through Gradio's copy in the upload cache: served to its owner only
    alice_copy, = (data / "uploads").rglob(alice_image.name)
    bob_copy, = (data / "uploads").rglob(bob_image.name)
    assert as_alice.get(f"/gradio_api/file={alice_copy}").content == alice_image.read_bytes()
    assert as_bob.get(f"/gradio_api/file={bob_copy}").content == bob_image.read_bytes()
    assert as_bob.get(f"/gradio_api/file={alice_copy}").status_code == 404
    assert as_alice.get(f"/gradio_api/file={bob_copy}").status_code == 404
    for path in (alice_image, alice_copy):  # nor without a login
        assert httpx.get(f"{url}/gradio_api/file={path}").status_code in (401, 403, 404)
    analyst = Client(url, auth=("analyst", LEGACY), verbose=False)  # the old single login still works
    # and sees neither user's, but keeps the conversation that had no owner (the shared login saw them all)
    assert [c[1] for c in analyst.predict("", "zh", None, api_name="/search")["choices"]] == [unowned]
    with pytest.raises(Exception):
        Client(url, auth=("analyst", PASSWORDS["alice"]), verbose=False)

    # uploads: in <data_dir>/uploads, the folder 0700, folders and files below it private
    uploads = data / "uploads"
    assert stat.S_IMODE(uploads.stat().st_mode) == 0o700
    examples = {p.name for p in (ROOT / "examples").iterdir()}  # the page's example images: public copies
    files = [p for p in uploads.rglob("*") if p.is_file() and p.name not in examples]
    assert {"airplane_192.jpg", alice_image.name} <= {p.name for p in files}  # the upload, the chat's copy
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: "0o600" for p in files}
    assert stat.S_IMODE((data / "remoteglm.db").stat().st_mode) == 0o600  # made by `users add`: private too
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in uploads.rglob("*") if p.is_dir())
