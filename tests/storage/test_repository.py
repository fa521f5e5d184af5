"""ConversationStore on a real SQLite file and, when REMOTEGLM_TEST_POSTGRES_URL is set, a real PostgreSQL."""

import json
import threading

import pytest

from model_adapter import ImageError
from storage import ConversationStore, NotFound
from storage.export import to_json_text, to_markdown


@pytest.fixture
def store(database_url, tmp_path):
    store = ConversationStore(database_url, tmp_path / "images")
    yield store
    store.close()


def test_conversation_round_trip_with_image(store, airplane_jpg):
    conv = store.create(title="机场", model="mini", settings={"temperature": 0.5})
    image = store.add_image(airplane_jpg, original_name="airport.jpg")
    user = store.append_message(conv.id, "user", "这张遥感图像展现了什么场景？", images=[image])
    answer = store.append_message(conv.id, "assistant", "", status="streaming")
    store.update_message(answer.id, text="这是一个机场。", status="complete", prompt_tokens=40,
                         completion_tokens=7, latency_ms=120)

    loaded = store.get(conv.id)
    assert (loaded.title, loaded.model, loaded.settings) == ("机场", "mini", {"temperature": 0.5})
    assert [(m.role, m.text, m.status) for m in loaded.messages] == [
        ("user", "这张遥感图像展现了什么场景？", "complete"), ("assistant", "这是一个机场。", "complete")]
    assert loaded.messages[0].id == user.id
    assert loaded.messages[0].images == [image]
    assert image.path.read_bytes() == airplane_jpg  # a plain RGB JPEG is kept byte for byte
    assert loaded.messages[1].completion_tokens == 7 and loaded.messages[1].latency_ms == 120


def test_images_are_stored_once_by_content_hash(store, airplane_jpg):
    first = store.add_image(airplane_jpg)
    second = store.add_image(airplane_jpg)
    assert first == second
    assert len(list(first.path.parent.glob("*.jpg"))) == 1
    assert len(first.sha256) == 64


def test_database_holds_references_not_image_bytes(store, airplane_jpg):
    """The image is a file named by its SHA-256; the database rows point at it and hold none of its bytes (raw or
    base64) in any of the store's tables. (Other tables in a shared test database, such as LangGraph's checkpoints
    from the agent tests, are not the store's.)"""
    import base64
    import hashlib

    from sqlalchemy import inspect, text

    from storage.models import Base

    conv = store.create()
    image = store.add_image(airplane_jpg)
    message = store.append_message(conv.id, "user", "q", images=[image])
    digest = hashlib.sha256(airplane_jpg).hexdigest()
    assert image.sha256 == digest and image.path.read_bytes() == airplane_jpg
    with store.engine.connect() as conn:
        rows = {table: conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
                for table in inspect(conn).get_table_names() if table in Base.metadata.tables}
    assert set(rows) == set(Base.metadata.tables)
    (stored,) = rows["image"]
    assert stored["sha256"] == digest and stored["filename"] == image.path.name and digest in image.path.name
    assert stored["size_bytes"] == len(airplane_jpg)
    assert [(r["message_id"], r["image_sha256"]) for r in rows["message_image"]] == [(message.id, digest)]
    encoded = base64.b64encode(airplane_jpg[:60]).decode()[:40]  # a piece of the bytes as a data URL would have it
    for table, table_rows in rows.items():
        for row in table_rows:
            for value in row.values():
                if isinstance(value, (bytes, memoryview)):
                    assert airplane_jpg[:64] not in bytes(value), table
                assert len(str(value)) < 200 and encoded not in str(value), (table, str(value)[:80])


def test_list_is_newest_first_and_paginated(store):
    ids = [store.create(title=f"c{i}").id for i in range(5)]
    store.append_message(ids[1], "user", "bump")  # activity moves c1 to the top
    listed = [c.id for c in store.list(limit=3)]
    assert listed == [ids[1], ids[4], ids[3]]
    assert [c.id for c in store.list(limit=3, offset=3)] == [ids[2], ids[0]]
    assert store.count() == 5


def test_rename_and_settings(store):
    conv = store.create()
    store.rename(conv.id, "  港口分析  ")
    store.update_settings(conv.id, {"top_p": 0.9})
    loaded = store.get(conv.id)
    assert loaded.title == "港口分析" and loaded.settings == {"top_p": 0.9}
    with pytest.raises(NotFound):
        store.rename("missing", "x")


def test_delete_removes_messages_and_unshared_images(store, airplane_jpg, harbor_jpg):
    keep, drop = store.create(), store.create()
    shared = store.add_image(airplane_jpg)
    only_drop = store.add_image(harbor_jpg)
    store.append_message(keep.id, "user", "a", images=[shared])
    store.append_message(drop.id, "user", "b", images=[shared, only_drop])
    store.delete(drop.id)
    with pytest.raises(NotFound):
        store.get(drop.id)
    assert shared.path.exists() and not only_drop.path.exists()
    assert store.get(keep.id).messages[0].images == [shared]


def test_bad_image_is_refused_and_nothing_is_lost(store, airplane_jpg):
    conv = store.create()
    store.append_message(conv.id, "user", "first", images=[store.add_image(airplane_jpg)])
    with pytest.raises(ImageError):
        store.add_image(b"not an image")
    assert [m.text for m in store.get(conv.id).messages] == ["first"]


def test_invalid_status_is_refused(store):
    conv = store.create()
    with pytest.raises(ValueError, match="status"):
        store.append_message(conv.id, "assistant", "x", status="bogus")


def test_concurrent_appends_from_threads(store):
    conv = store.create()
    errors = []

    def worker(n):
        try:
            for i in range(10):
                store.append_message(conv.id, "user", f"{n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    texts = [m.text for m in store.get(conv.id).messages]
    assert sorted(texts) == sorted(f"{n}-{i}" for n in range(4) for i in range(10))


def test_reopening_the_database_keeps_everything(database_url, tmp_path, airplane_jpg):
    first = ConversationStore(database_url, tmp_path / "images")
    conv = first.create(title="restart")
    first.append_message(conv.id, "user", "q", images=[first.add_image(airplane_jpg)])
    first.close()
    second = ConversationStore(database_url, tmp_path / "images")
    loaded = second.get(conv.id)
    assert loaded.title == "restart" and loaded.messages[0].images[0].path.exists()
    second.close()


def test_exports(store, airplane_jpg):
    conv = store.create(title="导出")
    image = store.add_image(airplane_jpg)
    store.append_message(conv.id, "user", "图中有什么？", images=[image])
    store.append_message(conv.id, "assistant", "几架飞机。", status="interrupted")
    view = store.get(conv.id)
    markdown = to_markdown(view)
    assert markdown.startswith("# 导出") and "图中有什么？" in markdown and image.filename in markdown
    assert "*[interrupted]*" in markdown
    data = json.loads(to_json_text(view))
    assert [m["text"] for m in data["messages"]] == ["图中有什么？", "几架飞机。"]
    assert data["messages"][0]["images"][0]["sha256"] == image.sha256


def test_an_answer_kept_as_alternative_stays_with_its_question_until_the_conversation_goes(store):
    conv = store.create()
    question = store.append_message(conv.id, "user", "图中有什么？")
    answer = store.append_message(conv.id, "assistant", "几架飞机。", prompt_tokens=5, completion_tokens=4)
    kept = store.keep_as_alternative(answer.id)
    view = store.get(conv.id)
    assert [m.id for m in view.messages] == [question.id]
    assert [(a.id, a.question, a.text, a.status, a.completion_tokens) for a in view.messages[0].alternatives] == [
        (kept.id, "图中有什么？", "几架飞机。", "complete", 4)]
    with pytest.raises(NotFound):
        store.keep_as_alternative(question.id)  # a question is no answer
    store.delete(conv.id)
    from sqlalchemy import func, select

    from storage.models import AnswerAlternative
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AnswerAlternative)) == 0


def test_a_database_of_the_schema_before_alternatives_opens_and_gains_them(database_url, tmp_path):
    """Databases made before earlier answers were kept have no answer_alternative table: opening one creates it
    and keeps every stored row."""
    from sqlalchemy import create_engine, inspect

    from storage.models import Base
    engine = create_engine(database_url)
    old_tables = [t for t in Base.metadata.sorted_tables if t.name != "answer_alternative"]
    Base.metadata.create_all(engine, tables=old_tables)
    with engine.begin() as conn:
        conn.execute(old_tables[0].insert().values(id="c" * 32, title="旧对话", settings={}))  # conversation
    assert "answer_alternative" not in inspect(engine).get_table_names()
    engine.dispose()
    store = ConversationStore(database_url, tmp_path / "images")
    try:
        assert [c.title for c in store.list()] == ["旧对话"]
        store.append_message("c" * 32, "user", "图中有什么？")
        answer = store.append_message("c" * 32, "assistant", "几架飞机。")
        store.keep_as_alternative(answer.id)
        assert store.get("c" * 32).messages[0].alternatives[0].text == "几架飞机。"
    finally:
        store.close()


def test_thumbnails_are_made_once_from_the_stored_image_and_go_with_it(store, airplane_jpg, harbor_jpg):
    from io import BytesIO

    from PIL import Image

    first, second, empty = store.create(), store.create(), store.create()
    airplane, harbor = store.add_image(airplane_jpg), store.add_image(harbor_jpg)
    store.append_message(first.id, "user", "a", images=[airplane])
    store.append_message(first.id, "user", "b", images=[harbor])
    store.append_message(second.id, "user", "c", images=[harbor])
    found = store.first_images([first.id, second.id, empty.id])
    assert {k: v.sha256 for k, v in found.items()} == {first.id: airplane.sha256, second.id: harbor.sha256}
    data = store.thumbnail(airplane)
    assert Image.open(BytesIO(data)).size == (64, 64)
    made = store.thumbnails.path(airplane.sha256)
    made.write_bytes(b"kept")  # the second request reads the file made by the first one
    assert store.thumbnail(airplane) == b"kept"
    made.write_bytes(data)
    store.delete(first.id)  # its airplane image is used nowhere else: image and thumbnail go
    assert not airplane.path.exists() and not made.exists()
    assert store.thumbnail(harbor) and store.thumbnails.path(harbor.sha256).exists()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    store = ConversationStore(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "images")
    from sqlalchemy import text

    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.close()
