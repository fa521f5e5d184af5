"""imagery.fetch: the one URL -> bytes step of the chat model, the tool and the API server."""

from __future__ import annotations

import base64
import binascii

import pytest

from imagery.fetch import URLRefused, fetch_image_bytes


def test_data_urls_base64_and_percent_encoded():
    assert fetch_image_bytes("data:image/png;base64," + base64.b64encode(b"\x89PNG data").decode()) == b"\x89PNG data"
    assert fetch_image_bytes("data:text/plain,a%20b") == b"a b"


def test_strict_data_urls_must_be_valid_base64():
    with pytest.raises(URLRefused, match="must be base64 encoded"):
        fetch_image_bytes("data:image/png,abc", strict_data=True)
    with pytest.raises(binascii.Error):
        fetch_image_bytes("data:image/png;base64,not base64!", strict_data=True)


def test_paths_and_file_urls_are_read(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"jpeg bytes")
    assert fetch_image_bytes(str(path)) == b"jpeg bytes"
    assert fetch_image_bytes(path.as_uri(), allowed_dir=tmp_path) == b"jpeg bytes"
    with pytest.raises(FileNotFoundError, match="no such image file"):
        fetch_image_bytes((tmp_path / "missing.jpg").as_uri(), allowed_dir=tmp_path)


def test_outside_the_allowed_directory_is_refused_alike_whether_the_file_exists_or_not(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    messages = []
    for url in [(outside / "secret.jpg").as_uri(), str(outside / "missing.jpg"),
                (inside / ".." / "outside" / "secret.jpg").as_uri()]:
        with pytest.raises(URLRefused, match="only allowed under") as caught:
            fetch_image_bytes(url, allowed_dir=inside)
        messages.append(str(caught.value))
    assert len(set(messages)) == 1
    assert isinstance(caught.value, PermissionError)  # the tool reports OSErrors to its agent


def test_a_caller_may_accept_fewer_kinds_of_url(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    with pytest.raises(URLRefused, match="unsupported image URL scheme"):
        fetch_image_bytes(str(path), paths=False)
    with pytest.raises(URLRefused, match="unsupported image URL scheme 'file'"):
        fetch_image_bytes(path.as_uri(), files=False)
    with pytest.raises(URLRefused, match="unsupported image URL scheme 'https'"):
        fetch_image_bytes("https://example.invalid/a.jpg", remote=False)  # refused without any network access
