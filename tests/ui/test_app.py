"""`python app.py`: the command table, one-line startup errors, and the real entry point serving the chat."""

from __future__ import annotations

import subprocess
import sys
import time
import types
import urllib.request

import app
from settings import REPO_ROOT
from tests.ui.conftest import AppProcess, free_port


def test_help_lists_every_command_and_the_settings_flags():
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    for word in ("web", "cli", "serve", "--model", "--adapter", "--quant", "--database-url", "--host", "--port",
                 "--auth-user", "--max-upload-mb", "--conversation", "REMOTEGLM_MODEL"):
        assert word in out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # (model loading may draw a progress bar first)
    assert last.startswith("错误 error:") and err.count("错误 error:") == 1, err
    return last


def test_missing_default_model_says_how_to_point_at_one(monkeypatch, tmp_path, capsys):
    missing = tmp_path / "checkpoints" / "remoteglm-mini"
    monkeypatch.setattr(app, "DEFAULT_MODEL_DIR", missing)
    monkeypatch.setenv("REMOTEGLM_MODEL", str(missing))
    assert app.main(["--data-dir", str(tmp_path)]) == 2
    assert "python -m testing.tiny_models glm4v /tmp/tiny" in one_error_line(capsys)


def test_missing_model_directory_is_one_line(tmp_path, capsys):
    assert app.main(["cli", "--model", str(tmp_path / "nope"), "--data-dir", str(tmp_path)]) == 2
    assert "--model" in one_error_line(capsys)


def test_unreachable_database_is_one_line_without_the_password(tiny_glm4v_dir, capsys):
    url = "postgresql+psycopg://analyst:s3cret@127.0.0.1:1/remoteglm"
    assert app.main(["--model", str(tiny_glm4v_dir), "--database-url", url]) == 2
    err = one_error_line(capsys)
    assert "--database-url" in err and "s3cret" not in err


def test_invalid_setting_names_the_flag(capsys):
    assert app.main(["--port", "abc"]) == 2
    assert "--port" in one_error_line(capsys)


def test_serve_hands_the_settings_to_the_api_server(monkeypatch, tiny_glm4v_dir):
    called = {}
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(serve=lambda settings: called.update(s=settings)))
    assert app.main(["serve", "--model", str(tiny_glm4v_dir), "--port", "8123"]) == 0
    assert called["s"].model == str(tiny_glm4v_dir) and called["s"].port == 8123


def test_python_app_py_serves_the_chat_and_says_where_things_are(tiny_glm4v_dir, tmp_path):
    port = free_port()
    process = AppProcess("--model", str(tiny_glm4v_dir), "--data-dir", str(tmp_path), "--port", str(port))
    try:
        ready = process.wait_for("ready")
        seconds = time.perf_counter() - process.started
        output = "".join(process.lines)
        assert f"sqlite:///{tmp_path / 'remoteglm.db'}" in output and str(tmp_path / "images") in output
        assert f"http://127.0.0.1:{port}" in ready
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and "RemoteGLM" in response.read().decode()
        print(f"python app.py ready in {seconds:.1f}s (tiny model)")
    finally:
        process.stop()


def test_port_in_use_is_one_line(tiny_glm4v_dir, tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert app.main(["--model", str(tiny_glm4v_dir), "--data-dir", str(tmp_path), "--port", str(port)]) == 2
    assert "--port" in one_error_line(capsys)


# --- start-up: the page first, the model in the background (issue 14) ----------------------------------------------
def test_the_web_chat_is_importable_without_torch():
    code = "import sys, app, ui.web; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_slider_defaults_read_from_disk_are_the_loaded_models(tiny_glm4v_dir):
    from model_adapter import load_backend
    from settings import DEFAULT_MODEL_DIR, Settings

    for model, extra in [(tiny_glm4v_dir, {}), (DEFAULT_MODEL_DIR, {}), (DEFAULT_MODEL_DIR, {"temperature": 0.3})]:
        settings = Settings(model=str(model), device="cpu", **extra)
        loading = app.LoadingBackend(settings)  # not started: what the page is built with
        assert loading.model_defaults == load_backend(settings).model_defaults
    assert app.LoadingBackend(Settings(model=str(DEFAULT_MODEL_DIR))).model_defaults["temperature"] == 0.0


def test_a_question_before_the_model_is_ready_waits_for_it(tiny_glm4v_dir):
    from settings import Settings

    loading = app.LoadingBackend(Settings(model=str(tiny_glm4v_dir), device="cpu"))
    assert loading.wait(timeout=0) is None and loading.model_name == tiny_glm4v_dir.name
    loading.start()
    assert loading.max_new_tokens == loading.wait().max_new_tokens  # any other attribute is the loaded backend's


def test_a_model_that_fails_to_load_stops_the_web_chat_with_one_line(tmp_path, capsys):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    (broken / "generation_config.json").write_text("{}", encoding="utf-8")  # the page is built; the load fails after
    assert app.main(["--model", str(broken), "--data-dir", str(tmp_path), "--port", str(free_port())]) == 2
    assert "--model" in one_error_line(capsys)
