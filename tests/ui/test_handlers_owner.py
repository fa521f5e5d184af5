"""The web chat's handlers with two logged-in users (issue 15 item 4): every handler that takes a conversation id
treats another user's conversation as missing and changes nothing of it; without a login (local use) everything
is visible as before."""

from __future__ import annotations

import gradio as gr

from tests.conftest import FIXTURES

AIRPLANE = str(FIXTURES / "ucm" / "airplane_192.jpg")
GEN = ("zh", 0.0, 0.4, 8)
ALICE, BOB = gr.Request(username="alice", session_hash="a"), gr.Request(username="bob", session_hash="b")


def turn(handlers, text, files, conversation_id, request, editing=False):
    return list(handlers.submit({"text": text, "files": files}, conversation_id, editing, *GEN, request=request))[-1]


def test_another_users_conversation_is_not_found_by_any_handler(handlers):
    chat, _, alice_id, _, sidebar, _ = turn(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE], None, ALICE)
    assert [c[1] for c in sidebar["choices"]] == [alice_id]
    service = handlers.service
    before = service.history(alice_id)
    assert service.store.owner_of(alice_id) == "alice"

    assert handlers.sidebar("zh", None, owner="bob")["choices"] == []
    assert handlers.search("场景", "zh", None, BOB)["choices"] == []
    opened = handlers.open(alice_id, "zh", BOB)
    assert opened[0] == [] and opened[1] is None  # like a missing conversation: a fresh chat
    assert handlers.export(alice_id, "md", "zh", BOB)["visible"] is False
    handlers.rename(alice_id, "bob was here", "zh", BOB)
    handlers.remember(alice_id, 1.5, 0.9, 3, BOB)
    assert handlers.start_edit(alice_id, "zh", BOB)[1] is False
    regenerated = list(handlers.regenerate(alice_id, "zh", *GEN[1:], request=BOB))[-1]
    assert regenerated[0][-1]["content"].startswith("⚠")
    handlers.delete(alice_id, "zh", BOB)
    # a question sent "into" alice's conversation from bob's session starts bob's own conversation instead
    _, _, bob_id, _, bob_sidebar, _ = turn(handlers, "图中有多少架飞机？", [AIRPLANE], alice_id, BOB)
    assert bob_id != alice_id and [c[1] for c in bob_sidebar["choices"]] == [bob_id]
    edited = turn(handlers, "改过的问题", [], alice_id, BOB, editing=True)  # editing alice's question: refused
    assert len(edited[0]) == 1 and edited[0][0]["content"].startswith("⚠")  # only the message, none of alice's

    after = service.history(alice_id)  # alice's conversation is exactly as it was
    assert (after.title, after.settings, [(m.id, m.text, m.status) for m in after.messages]) == (
        before.title, before.settings, [(m.id, m.text, m.status) for m in before.messages])
    assert handlers.open(alice_id, "zh", ALICE)[1] == alice_id
    assert {c[1] for c in handlers.sidebar("zh", None)["choices"]} == {alice_id, bob_id}  # no login: all of them
    handlers.delete(alice_id, "zh", ALICE)
    assert [c.id for c in service.conversations()] == [bob_id]
