"""translate/ against a scripted local OpenAI-compatible server: cache, resume, retries, validation, budget, CLI."""

import json
from pathlib import Path

import pytest

from translate.__main__ import main
from translate.client import ChatClient
from translate.config import ConfigError, TranslateConfig
from translate.prompts import load_prompt, parse_numbered
from translate.runner import run
from translate.validate import check_paragraph, check_sentence

from .fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
UCM = REPO / "tests" / "fixtures" / "ucm" / "captions.json"
RSICD = REPO / "tests" / "fixtures" / "rsicd" / "captions.json"
SHIPPED = [REPO / "data" / "zh" / "captions_zh.jsonl", REPO / "data" / "zh" / "rsicd_captions_zh.jsonl"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def shipped() -> dict[str, dict]:
    return {r["en"]: r for p in SHIPPED for r in _rows(p)}


@pytest.fixture(scope="module")
def server(shipped):
    fake = FakeOpenAI({en: r["zh"] for en, r in shipped.items()}, delay=3.0).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server):
    server.reset()
    return server


def _expected(captions: Path, shipped: dict) -> list[dict]:
    seen = {}
    for im in json.loads(captions.read_text())["images"]:
        for s in im["sentences"]:
            seen.setdefault(s["raw"].strip(), None)
    return [{"id": i, "en": en, "zh": shipped[en]["zh"]} for i, en in enumerate(seen)]


def _cfg(tmp_path: Path, fake: FakeOpenAI, **kw) -> TranslateConfig:
    base = dict(captions=[UCM], out=tmp_path / "zh.jsonl", base_url=fake.url, model="fake-mt", api_key="test",
                batch_size=5, concurrency=2, backoff=0.001, timeout=5.0, cache=tmp_path / "cache.sqlite",
                progress=False)
    base.update(kw)
    return TranslateConfig(**base)


# --- pure parts ---------------------------------------------------------------------------------------------------
def test_prompt_files_have_versions_and_glossary():
    for mode in ("sentences", "merge", "rewrite"):
        p = load_prompt(mode)
        assert p.version.startswith(mode)
        msgs = p.messages(["a pond .", "two farmland ."])
        assert "farmland -> 农田" in msgs[0]["content"] and msgs[1]["content"] == "1. a pond .\n2. two farmland ."


def test_numbered_answer_parsing_checks_line_count():
    assert parse_numbered("1. 一\n2. 二", 2) == ["一", "二"]
    assert parse_numbered("1、一\n2：二", 2) == ["一", "二"]
    assert parse_numbered("1. 一", 2) is None
    assert parse_numbered("1. 一\n3. 三", 2) is None
    assert parse_numbered("只有一句。", 1) == ["只有一句。"]


def test_validation_rules():
    assert check_sentence("Four storage tanks are connected .", "四个储罐相连。") == []
    assert check_sentence("a R shaped road .", "一条R形道路。") == []
    assert "empty" in check_sentence("a pond .", " ")
    assert check_sentence("a pond .", "a pond .") == ["no Chinese characters"]
    assert any(p.startswith("English left") for p in check_sentence("a big pond .", "一个大pond。"))
    assert any(p.startswith("glossary: storage tank") for p in check_sentence("a storage tank .", "一个油箱。"))
    assert any(p.startswith("number: four") for p in check_sentence("four airplanes .", "几架飞机。"))
    assert any(p.startswith("colour: red") for p in check_sentence("a red roof .", "一个屋顶。"))
    assert any(p.startswith("length ratio") for p in check_sentence("a pond .", "一个池塘" * 10))
    assert check_sentence("a four-way road .", "一个十字路口。") == []
    assert check_paragraph(["a farmland ."] * 5, "这是一张遥感图像，显示了一片农田。") == []
    assert check_paragraph(["a farmland ."] * 5, "这是一张遥感图像，显示了一片土地。")
    assert check_paragraph(["two airplanes at the airport ."] * 5, "机场里有两架飞机和一个储罐。") == [
        "not in the sources: storage_tank"]


def test_shipped_translations_pass_validation(shipped):
    bad = [r for r in shipped.values() if check_sentence(r["en"], r["zh"])]
    assert len(shipped) == 3138 + 18190
    assert len(bad) / len(shipped) < 0.005, bad[:5]


def test_config_from_environment_and_errors_name_the_variable(tmp_path, monkeypatch):
    for var in ("REMOTEGLM_TRANSLATE_BASE_URL", "REMOTEGLM_TRANSLATE_MODEL", "REMOTEGLM_TRANSLATE_API_KEY",
                "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="REMOTEGLM_TRANSLATE_BASE_URL"):
        TranslateConfig(captions=[UCM], out=tmp_path / "x").resolved()
    monkeypatch.setenv("REMOTEGLM_TRANSLATE_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("REMOTEGLM_TRANSLATE_MODEL", "m")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        TranslateConfig(captions=[UCM], out=tmp_path / "x").resolved()
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    cfg = TranslateConfig(captions=[UCM], out=tmp_path / "x").resolved()
    assert (cfg.base_url, cfg.model, cfg.api_key) == ("http://127.0.0.1:1/v1", "m", "k")


# --- against the server -------------------------------------------------------------------------------------------
def test_cli_end_to_end_produces_shipped_structure_and_rerun_is_free(tmp_path, fake, shipped, capsys):
    out = tmp_path / "captions_zh.jsonl"
    argv = ["run", str(UCM), "--out", str(out), "--base-url", fake.url, "--model", "fake-mt", "--api-key", "x",
            "--cache", str(tmp_path / "c.sqlite"), "--batch-size", "7", "--backoff", "0.001", "--no-progress"]
    assert main(argv) == 0
    assert _rows(out) == _expected(UCM, shipped)
    assert all(set(r) == {"id", "en", "zh"} for r in _rows(out))
    first = len(fake.requests)
    assert first == -(-len(_rows(out)) // 7)  # ceil(units / batch size): one request per batch
    assert "requests:" in capsys.readouterr().out
    assert main(argv) == 0
    assert len(fake.requests) == first  # rerun: zero requests
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["cache_hits"] == len(_rows(out)) and report["requests"] == 0


def test_retries_with_backoff_on_429_500_and_timeout(tmp_path, fake, shipped):
    fake.reset("429", "500", "timeout")
    rep = run(_cfg(tmp_path, fake, timeout=1.0, concurrency=1))
    assert rep.failed == 0 and rep.translated == rep.units
    assert rep.errors == {"429": 1, "500": 1, "timeout": 1} and rep.retries == 3
    assert _rows(tmp_path / "zh.jsonl") == _expected(UCM, shipped)


def test_exhausted_retries_are_listed_never_written(tmp_path, fake):
    fake.reset(default="500")
    rep = run(_cfg(tmp_path, fake, max_retries=1))
    assert rep.translated == 0 and rep.failed == rep.units and rep.requests == 2 * -(-rep.units // 5)
    assert _rows(tmp_path / "zh.jsonl") == []
    failures = _rows(Path(rep.failures_file))
    assert len(failures) == rep.units and "InternalServerError" in failures[0]["problems"][0]


def test_wrong_line_count_is_retried_then_split(tmp_path, fake, shipped):
    fake.reset("short", "short", "short")
    rep = run(_cfg(tmp_path, fake, concurrency=1, max_attempts=3))
    assert rep.line_count_errors == 3 and rep.failed == 0
    assert _rows(tmp_path / "zh.jsonl") == _expected(UCM, shipped)


def test_english_leftovers_are_rejected_and_retried(tmp_path, fake, shipped):
    fake.reset("english")
    rep = run(_cfg(tmp_path, fake, concurrency=1))
    assert rep.validation_rejects == 5 and rep.failed == 0
    assert _rows(tmp_path / "zh.jsonl") == _expected(UCM, shipped)


def test_persistently_bad_answers_fail_with_reasons(tmp_path, fake):
    fake.reset(default="english")
    rep = run(_cfg(tmp_path, fake, max_attempts=2))
    assert rep.translated == 0 and rep.failed == rep.units
    assert _rows(tmp_path / "zh.jsonl") == []
    row = _rows(Path(rep.failures_file))[0]
    assert row["problems"] == ["no Chinese characters"] and row["last_answer"] == row["source"]



def test_check_command_reports_failing_lines(tmp_path, capsys):
    f = tmp_path / "zh.jsonl"
    f.write_text('{"id": 0, "en": "a pond .", "zh": "一个池塘。"}\n{"id": 1, "en": "a pond .", "zh": "a pond"}\n')
    assert main(["check", str(f), "-v"]) == 1
    out = capsys.readouterr().out
    assert "1/2 pass" in out and "no Chinese characters" in out


def test_budget_guard_stops_and_rerun_resumes(tmp_path, fake, shipped):
    rep = run(_cfg(tmp_path, fake, concurrency=1, max_requests=2))
    assert rep.stopped and "max requests" in rep.stopped
    assert rep.requests == 2 and rep.translated == 10 and rep.skipped == rep.units - 10
    fake.reset()
    rep2 = run(_cfg(tmp_path, fake))
    assert rep2.cache_hits == 10 and rep2.requests == len(fake.requests) == -(-(rep.units - 10) // 5)
    assert _rows(tmp_path / "zh.jsonl") == _expected(UCM, shipped)
    fake.reset()
    assert run(_cfg(tmp_path, fake, max_tokens=1)).requests == 0  # all cached: nothing to spend


def test_token_budget(tmp_path, fake):
    rep = run(_cfg(tmp_path, fake, concurrency=1, max_tokens=1))
    assert rep.requests == 1 and rep.stopped and "max tokens" in rep.stopped


class _InterruptedClient(ChatClient):
    """Raises KeyboardInterrupt (as Ctrl-C would) once, on request number `after + 1`."""

    after: int = 2
    calls: int = 0

    def complete(self, messages):
        self.calls += 1
        if self.calls == self.after + 1:
            raise KeyboardInterrupt
        return super().complete(messages)


def test_interrupted_run_resumes_where_it_stopped(tmp_path, fake, shipped):
    cfg = _cfg(tmp_path, fake, concurrency=1)
    client = _InterruptedClient(base_url=fake.url, model="fake-mt", api_key="x", backoff=0.001)
    rep = run(cfg, client=client)
    # Ctrl-C stops scheduling; at most the batch a worker had already picked up still finishes.
    assert rep.stopped == "interrupted" and rep.translated in (10, 15) and client.calls <= 4
    fake.reset()
    rep2 = run(_cfg(tmp_path, fake))
    assert rep2.cache_hits == rep.translated and rep2.translated == rep2.units - rep.translated
    assert rep2.requests == -(-(rep2.units - rep.translated) // 5)
    assert _rows(tmp_path / "zh.jsonl") == _expected(UCM, shipped)


def test_fatal_auth_error_stops_the_run(tmp_path, fake):
    fake.reset("401")
    rep = run(_cfg(tmp_path, fake, concurrency=1))
    assert rep.stopped and "401" in rep.stopped and rep.requests == 1


def test_reuse_extends_existing_file_with_new_ids(tmp_path, fake, shipped):
    existing = _expected(UCM, shipped)
    known = tmp_path / "known.jsonl"
    known.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in existing), encoding="utf-8")
    rep = run(_cfg(tmp_path, fake, captions=[UCM, RSICD], reuse=[known]))
    rows = _rows(tmp_path / "zh.jsonl")
    assert rep.reused == len(existing) and rows[:len(existing)] == existing
    new = rows[len(existing):]
    assert new and [r["id"] for r in new] == list(range(len(existing), len(existing) + len(new)))
    assert all(r["zh"] == shipped[r["en"]]["zh"] for r in new)


def test_merge_mode_writes_original_format_and_rewrite_is_flagged(tmp_path, fake):
    rep = run(_cfg(tmp_path, fake, mode="merge", out=tmp_path / "merge.json"))
    rows = json.loads((tmp_path / "merge.json").read_text())
    assert rep.failed == 0 and len(rows) == 8
    assert rows[0]["img"] == "./UCM/192.tif" and set(rows[0]) == {"img", "prompt", "label"}
    assert rows[0]["label"].startswith("这是一张遥感图像") and "飞机" in rows[0]["label"]
    rep = run(_cfg(tmp_path, fake, mode="rewrite", out=tmp_path / "rewrite.jsonl"))
    rows = _rows(tmp_path / "rewrite.jsonl")
    assert rep.failed == 0 and len(rows) == 8 and all(r["rewritten"] is True for r in rows)
    assert rows[0]["prompt_version"] == "rewrite-v1" and len(rows[0]["en"]) == 5


def test_cache_key_includes_model_and_prompt_version(tmp_path, fake):
    run(_cfg(tmp_path, fake))
    n = len(fake.requests)
    run(_cfg(tmp_path, fake, model="another-model"))
    assert len(fake.requests) == 2 * n


def test_full_ucm_and_sydney_run_reproduces_the_shipped_file(tmp_path, fake):
    """The whole shipped data/en caption files through the CLI: every accepted line equals data/zh/captions_zh.jsonl.

    The one line the validator flags is a source typo ("Two are three storage tanks ...") that needs a human.
    """
    out = tmp_path / "captions_zh.jsonl"
    argv = ["run", str(REPO / "data/en/ucm/dataset.json"), str(REPO / "data/en/sydney/dataset.json"), "--out",
            str(out), "--base-url", fake.url, "--model", "fake-mt", "--api-key", "x", "--cache",
            str(tmp_path / "c.sqlite"), "--batch-size", "25", "--concurrency", "2", "--no-progress"]
    assert main(argv) == 1  # 1 = some units failed
    shipped_rows = {r["id"]: r for r in _rows(SHIPPED[0])}
    rows = _rows(out)
    assert len(rows) == len(shipped_rows) - 1 and all(shipped_rows[r["id"]] == r for r in rows)
    failures = _rows(out.with_name(out.name + ".failures.jsonl"))
    assert [f["source"] for f in failures] == ["Two are three storage tanks triangularly distributed in the lawn ."]


def test_module_entry_point_runs_as_a_script(tmp_path, fake, shipped):
    import subprocess
    import sys

    out = tmp_path / "zh.jsonl"
    env = {"REMOTEGLM_TRANSLATE_BASE_URL": fake.url, "REMOTEGLM_TRANSLATE_MODEL": "fake-mt",
           "REMOTEGLM_TRANSLATE_API_KEY": "x", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "translate", "run", str(UCM), "--out", str(out), "--cache",
                           str(tmp_path / "c.sqlite"), "--no-progress"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "requests: 2" in proc.stdout and _rows(out) == _expected(UCM, shipped)


# --- flags ---------------------------------------------------------------------------------------------------------
def test_run_flags_come_from_the_config_with_the_translate_environment(monkeypatch):
    from settings import config_from_flags
    from translate.__main__ import _parser
    from translate.config import ENV_PREFIX, TranslateConfig

    monkeypatch.setenv("REMOTEGLM_TRANSLATE_BATCH_SIZE", "9")
    monkeypatch.setenv("REMOTEGLM_TRANSLATE_MODEL", "from-env")
    monkeypatch.setenv("REMOTEGLM_MODEL", "the-app's-model")  # the chat's variable is not the translator's
    args = _parser().parse_args(["run", "a.json", "b.json", "--out", "o.jsonl", "--reuse", "r1", "--reuse", "r2",
                                 "--concurrency", "2", "--no-progress", "--mode", "merge", "--max-requests", "5"])
    cfg = config_from_flags(args, TranslateConfig, env_prefix=ENV_PREFIX)
    assert cfg.captions == [Path("a.json"), Path("b.json")] and cfg.out == Path("o.jsonl")
    assert cfg.reuse == [Path("r1"), Path("r2")] and cfg.mode == "merge" and cfg.progress is False
    assert (cfg.batch_size, cfg.concurrency, cfg.max_requests, cfg.model) == (9, 2, 5, "from-env")
    args = _parser().parse_args(["run", "a.json", "--out", "o", "--batch-size", "3", "--model", "flag"])
    cfg = config_from_flags(args, TranslateConfig, env_prefix=ENV_PREFIX)
    assert (cfg.batch_size, cfg.model, cfg.reuse, cfg.progress) == (3, "flag", [], True)
