"""RemoteGLM's one command-line entry: `python app.py` opens the web chat; a name -> function table starts the rest.

    python app.py                         # web chat at http://127.0.0.1:7860 on the default model
    python app.py --model /tmp/tiny       # ... on another model (python -m testing.tiny_models glm4v /tmp/tiny)
    python app.py cli [--image X.jpg] [--conversation ID]    # terminal chat
    python app.py serve                   # OpenAI-compatible API server (server/)
    python app.py users add NAME [--admin]   # a web chat login (password from a prompt or REMOTEGLM_NEW_PASSWORD)
    python app.py users list | delete NAME | passwd NAME | claim NAME
    python app.py translate run ...       # = python -m translate run ...      (translate/)
    python app.py build-data build ...    # = python -m finetune.data build ...
    python app.py train-lora train ...    # = python -m finetune.lora train ...
    python app.py train-mini ...          # = python -m finetune.mini ...
    python app.py evaluate ...            # = python -m finetune.evaluate ...
    python app.py bench speed ...         # = python -m bench.speed ...  (`python app.py bench` lists the scripts)
    python app.py --help                  # the table and every flag; each also reads REMOTEGLM_<NAME> from the env

`pip install .` gives the same table as the `remoteglm` command. The web, cli, serve and users commands share the
settings flags below; every other entry imports its module only when chosen and hands it the rest of the command
line (its own `main(argv)`), so `python app.py translate --help` shows the translation tool's flags.
This file only wires settings, the conversation service and a user interface together.
"""

from __future__ import annotations

import argparse
import ast
import getpass
import importlib
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from settings import DEFAULT_MODEL_DIR, Settings, add_arguments, api_auth_problem, from_args, web_auth_problem

STARTED = time.perf_counter()
PROG = "remoteglm" if Path(sys.argv[0]).name == "remoteglm" else "python app.py"  # the installed command, or this file
TINY_MODEL = "a tiny test model: `python -m testing.tiny_models glm4v /tmp/tiny && python app.py --model /tmp/tiny`"
TINY_MODEL_HINT = f"point --model (or REMOTEGLM_MODEL) at a model directory, e.g. {TINY_MODEL}"


class StartupError(RuntimeError):
    """A problem the user fixes with a flag or a setting; printed as one line, no traceback."""


def _say(text: str) -> None:
    print(text, flush=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _database_label(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def check_model(settings: Settings) -> None:
    """Fail fast, before anything heavy is imported, when the default model has not been put in place."""
    if settings.backend == "hf" and Path(settings.model) == DEFAULT_MODEL_DIR and not DEFAULT_MODEL_DIR.exists():
        raise StartupError(f"the default model RemoteGLM-mini is not at {DEFAULT_MODEL_DIR} yet; {TINY_MODEL_HINT}")


@contextmanager
def one_line_errors(settings: Settings) -> Iterator[None]:
    """Turn the errors a user fixes with a flag (model, database, data directory) into a StartupError."""
    from storage import DatabaseError

    try:
        yield
    except DatabaseError as exc:
        raise StartupError(_one_line(exc)) from exc
    except OSError as exc:  # the data or image directory cannot be created or written
        raise StartupError(f"cannot use {exc.filename}: {exc.strerror}; choose --data-dir / --image-dir") from exc
    except RuntimeError as exc:
        hf = sys.modules.get("model_adapter.hf")  # not imported: the error cannot be its ModelLoadError (no torch here)
        if hf is None or not isinstance(exc, hf.ModelLoadError):
            raise
        hint = f"(for {TINY_MODEL})" if "--model" in str(exc) else TINY_MODEL_HINT
        raise StartupError(f"{_one_line(exc)} {hint}") from exc


class LoadingBackend:
    """The web chat's local model while it loads in a background thread, so that the page is up first (issue 14).

    A question asked before the model is ready waits for it. What the page needs to be built - the model's name
    and generation defaults (the sliders) - is read from its directory without loading it; any other attribute
    waits for the real backend and is its. `error` holds a failed load (the web command then exits)."""

    def __init__(self, settings: Settings) -> None:
        self.model_name = Path(settings.model).name if Path(settings.model).exists() else settings.model
        self.error: BaseException | None = None
        self.seconds: float | None = None
        self._settings = settings
        self._defaults = _generation_defaults_on_disk(settings)
        self._backend = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._load, name="model-load", daemon=True)

    def start(self) -> LoadingBackend:
        self.thread.start()
        return self

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from model_adapter import load_backend

            self._backend = load_backend(self._settings)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits (the web command reports it)
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - started
            self._ready.set()

    def wait(self, timeout: float | None = None):
        """The loaded backend (raises what the load raised); None if `timeout` passed first."""
        if not self._ready.wait(timeout):
            return None
        if self.error is not None:
            raise self.error
        return self._backend

    @property
    def model_defaults(self) -> dict:
        if self._backend is None and self._defaults is not None:
            return self._defaults
        return self.wait().model_defaults

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy / pickle probes, and attributes read before __init__ set them
            raise AttributeError(name)
        return getattr(self.wait(), name)


def _generation_defaults_on_disk(settings: Settings) -> dict | None:
    """The model directory's generation_config.json as the loaded backend reads it (None: not a local directory)."""
    import json

    path = Path(settings.model) / "generation_config.json"
    if not path.is_file():
        return None
    from model_adapter.base import model_generation_defaults

    return model_generation_defaults(json.loads(path.read_text(encoding="utf-8")), settings.generation_overrides())


def load_service(settings: Settings, background: bool = False):
    """The conversation service for these settings; StartupError with the fix when the model or database fails.
    `background`: a local model loads in a thread (a `LoadingBackend`) while the caller builds its page."""
    check_model(settings)
    from bot.service import ConversationService
    from storage import ConversationStore

    with one_line_errors(settings):
        store = ConversationStore.from_settings(settings)
        _say(f"数据库 database: {_database_label(settings)}")
        _say(f"图像 images:     {settings.resolved_image_dir}")
        _say(f"模型 model:      {settings.model}" + (f" + {settings.adapter}" if settings.adapter else ""))
        if background and settings.backend == "hf":
            backend = LoadingBackend(settings).start()
        else:
            from model_adapter import load_backend

            backend = load_backend(settings)
    return ConversationService(backend, store, settings)


# --- entry points -------------------------------------------------------------------------------------------------

def open_accounts(settings: Settings):
    """The accounts table of the settings' database (created if missing); StartupError when it cannot be opened."""
    from storage import Accounts
    from storage.db import make_engine, make_sessionmaker

    with one_line_errors(settings):
        return Accounts(make_sessionmaker(make_engine(settings.resolved_database_url)))


def web(settings: Settings, args: argparse.Namespace) -> int:
    """Web chat in the browser (Gradio)."""
    if problem := web_auth_problem(settings):  # half a login: refused before the database is opened
        raise StartupError(problem)
    accounts = open_accounts(settings)
    if problem := web_auth_problem(settings, has_accounts=accounts.exists()):
        raise StartupError(problem)
    from ui.access import private_uploads
    from ui.web import build_demo, launch_options

    with one_line_errors(settings):
        private_uploads(settings)  # before build_demo: Gradio reads its upload folder when blocks are made
    service = load_service(settings, background=True)
    if settings.auth_user and settings.auth_password:
        # the one shared login of earlier versions saw every conversation: it keeps those that have no owner
        # (made before accounts, or by the terminal chat / API server), so an upgrade hides nothing from it
        if claimed := service.store.claim(settings.auth_user):
            print(f"{claimed} conversation(s) without an owner now belong to the --auth-user login "
                  f"'{settings.auth_user}'", flush=True)
    with one_line_errors(settings):  # a model not on disk is waited for here (its slider defaults), and may fail
        demo = build_demo(service, settings)
    demo.queue()
    try:
        demo.launch(prevent_thread_lock=True, **launch_options(settings, accounts, service.store))
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.host}:{settings.port} ({exc}); choose another --port") from exc
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{shown_host}:{demo.server_port}"
    if shown_host != settings.host:
        url += f" (listening on {settings.host or 'all interfaces'})"
    _say(f"RemoteGLM 网页对话已就绪 web chat ready in {time.perf_counter() - STARTED:.1f}s: {url}")
    try:
        if isinstance(service.backend, LoadingBackend):
            _wait_for_model(service.backend, settings, demo)
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


def _wait_for_model(backend: LoadingBackend, settings: Settings, demo) -> None:
    """Say when the page's model is ready; a model that fails to load stops the web chat with its one-line error."""
    try:
        with one_line_errors(settings):
            if backend.wait(timeout=0) is None:
                _say("模型加载中 model loading: questions asked now wait for it")
                while backend.wait(timeout=0.5) is None:
                    pass
    except BaseException:
        demo.close()
        raise
    since = time.perf_counter() - STARTED
    _say(f"模型已就绪 model ready (loaded in {backend.seconds:.1f}s, {since:.1f}s since start)")


def cli(settings: Settings, args: argparse.Namespace) -> int:
    """Terminal chat (image path, multi-turn, streaming; clear / history / stop)."""
    service = load_service(settings)
    from ui.cli import run_cli

    return run_cli(service, conversation_id=args.conversation, image=args.image, lang=args.lang)


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """OpenAI-compatible API server (/v1/chat/completions)."""
    if problem := api_auth_problem(settings):
        raise StartupError(problem)
    check_model(settings)
    try:
        from server import serve as serve_api
    except ImportError as exc:
        raise StartupError(f"the API server (server/) is not available: {exc}") from exc
    with one_line_errors(settings):
        result = serve_api(settings)
    return int(result or 0)


def _new_password(name: str) -> str:
    """REMOTEGLM_NEW_PASSWORD (for scripts), else asked twice at the terminal."""
    if password := os.environ.get("REMOTEGLM_NEW_PASSWORD"):
        return password
    if not sys.stdin.isatty():
        raise StartupError("no terminal to ask for the password: set REMOTEGLM_NEW_PASSWORD")
    first = getpass.getpass(f"{name} 的密码 password: ")
    if getpass.getpass("再输入一次 again: ") != first:
        raise StartupError("两次输入的密码不一致 (the two passwords differ)")
    return first


def users(settings: Settings, args: argparse.Namespace) -> int:
    """Web chat accounts: add NAME [--admin], list, delete NAME, passwd NAME, claim NAME."""
    from storage import AccountError, ConversationStore

    action, name = args.users_action, args.name
    if action is None or (action != "list" and not name):
        raise StartupError("usage: python app.py users add NAME [--admin] | list | delete NAME | passwd NAME | "
                           "claim NAME")
    accounts = open_accounts(settings)
    try:
        if action == "add":
            account = accounts.add(name, _new_password(name), admin=args.admin)
            _say(f"已添加用户 added user {account.name}" + (" (admin)" if account.is_admin else ""))
        elif action == "passwd":
            accounts.set_password(name, _new_password(name))
            _say(f"已更改密码 password changed for {name}")
        elif action == "delete":
            accounts.delete(name)
            _say(f"已删除用户 deleted user {name} (their conversations stay stored)")
        elif action == "claim":
            if name not in {a.name for a in accounts.list()}:
                raise AccountError(f"没有用户 {name} (no user {name})")
            with one_line_errors(settings):
                store = ConversationStore(settings.resolved_database_url, settings.resolved_image_dir, recover=False)
            try:
                _say(f"{store.claim(name)} 个无主对话归 {name} 所有 (conversations without an owner now belong to "
                     f"{name})")
            finally:
                store.close()
        else:
            rows = accounts.list()
            for account in rows:
                _say(f"{account.name:<24} {'admin' if account.is_admin else 'user':<6} "
                     f"{account.created_at:%Y-%m-%d %H:%M}  {account.conversations} conversations")
            if not rows:
                _say("还没有用户 no users yet: python app.py users add NAME [--admin]")
    except AccountError as exc:
        raise StartupError(str(exc)) from exc
    return 0


def _module_main(module: str, argv: list[str], prog: str) -> int:
    """Run `python -m module *argv`: its `main(argv)` where it has one, else its `__main__` (a package's)."""
    loaded = importlib.import_module(module)
    entry = getattr(loaded, "main", None)
    old_argv = sys.argv
    sys.argv = [prog, *argv]  # argparse names the program after argv[0] in its usage lines
    try:
        if entry is not None:
            return int(entry(argv) or 0)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:  # argparse's --help / usage errors, or a __main__ that exits with main()'s result
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv


BENCH_DIR = Path(__file__).resolve().parent / "bench"


def bench_scripts() -> dict[str, str]:
    """bench/'s scripts and the first line of each one's docstring, read without importing them (torch...)."""
    scripts = {}
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        scripts[path.stem] = doc.split("\n")[0].removeprefix("Benchmark: ")
    return scripts


def bench(argv: list[str]) -> int:
    """`python app.py bench NAME ...` runs bench/NAME.py's main with the rest; without a NAME, lists them."""
    scripts = bench_scripts()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in scripts:
        lines = "\n".join(f"  {name:<16} {line}" for name, line in scripts.items())
        out = sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr
        if argv and out is sys.stderr:
            print(f"错误 error: no benchmark {argv[0]!r}", file=out)
        print(f"usage: {PROG} bench NAME [flags]   ({PROG} bench NAME --help: its flags)\n"
              f"benchmarks:\n{lines}", file=out, flush=True)
        return 0 if out is sys.stdout else 2
    return _module_main(f"bench.{argv[0]}", argv[1:], f"{PROG} bench {argv[0]}")


@dataclass(frozen=True)
class Command:
    """One entry of the table: either `run(argv)`, handed the command line after the command's name (the module
    is imported only then), or `settings_run(settings, args)` for the commands that share the settings flags."""

    help: str
    run: Callable[[list[str]], int] | None = None
    settings_run: Callable[[Settings, argparse.Namespace], int] | None = None


def _module(module: str, name: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        return _module_main(module, argv, f"{PROG} {name}")
    return run


COMMANDS: dict[str, Command] = {
    "web": Command("web chat in the browser (the default)", settings_run=web),
    "cli": Command("terminal chat: image path, questions, streamed answers; clear / history / stop", settings_run=cli),
    "serve": Command("OpenAI-compatible API server (/v1/chat/completions)", settings_run=serve),
    "users": Command("web chat accounts: users add NAME [--admin] | list | delete NAME | passwd NAME | claim NAME",
                     settings_run=users),
    "translate": Command("translate caption files with an OpenAI-compatible LLM (= python -m translate)",
                         _module("translate.__main__", "translate")),
    "build-data": Command("build the instruction-tuning conversations (= python -m finetune.data)",
                          _module("finetune.data", "build-data")),
    "train-lora": Command("LoRA / QLoRA fine-tuning and adapter export (= python -m finetune.lora)",
                          _module("finetune.lora", "train-lora")),
    "train-mini": Command("train RemoteGLM-mini from scratch (= python -m finetune.mini)",
                          _module("finetune.mini", "train-mini")),
    "evaluate": Command("evaluate any model on a dataset split (= python -m finetune.evaluate)",
                        _module("finetune.evaluate", "evaluate")),
    "bench": Command("benchmarks that print figures: bench NAME ... (= python -m bench.NAME; `bench` lists them)",
                     bench),
}
SETTINGS_COMMANDS = [name for name, command in COMMANDS.items() if command.settings_run is not None]


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<11} {command.help}" for name, command in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f"{PROG} [COMMAND] [flags]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="RemoteGLM: chat about remote-sensing images.\n\ncommands (python app.py COMMAND --help: its "
                    f"flags; the settings flags below are those of web, cli, serve and users):\n{commands}",
    )
    parser.add_argument("command", nargs="?", default="web", choices=SETTINGS_COMMANDS,
                        help="what to start (default: web); the other commands of the table parse their own flags")
    parser.add_argument("users_action", nargs="?", choices=["add", "list", "delete", "passwd", "claim"],
                        help="users: what to do with the accounts")
    parser.add_argument("name", nargs="?", help="users: the account's name")
    parser.add_argument("--admin", action="store_true", help="users add: the new user is an administrator")
    parser.add_argument("--conversation", help="cli: resume the stored conversation with this id")
    parser.add_argument("--image", help="cli: start with this image")
    parser.add_argument("--lang", choices=["zh", "en"], default="zh", help="cli: interface language (default zh)")
    add_arguments(parser)
    return parser


def _run_with_settings(argv: list[str]) -> int:
    """web / cli / serve / users: the settings flags (and REMOTEGLM_* variables) parsed, then the command run."""
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        settings = from_args(args)
    except ValidationError as exc:  # name the flag the user must change
        problems = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        print(f"错误 error: invalid setting: {problems}", file=sys.stderr, flush=True)
        return 2
    try:
        return COMMANDS[args.command].settings_run(settings, args)
    except StartupError as exc:
        print(f"错误 error: {exc}", file=sys.stderr, flush=True)
        return 2


def main(argv: list[str] | None = None) -> int:
    """The entry of `python app.py` and of the installed `remoteglm` command: look the first word up in the table."""
    argv = sys.argv[1:] if argv is None else list(argv)
    os.umask(0o077)  # what RemoteGLM writes (database, images, uploads, exports) is readable by this user only
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].run is not None:
        return COMMANDS[argv[0]].run(argv[1:])
    return _run_with_settings(argv)  # no command word: the web chat (or settings flags first: `--model X cli`)


if __name__ == "__main__":
    sys.exit(main())
