"""RemoteGLM's one settings object.

Every field can be set three ways, strongest first: a command-line flag (`--max-new-tokens 256`, built from the
field name by `add_arguments`), an environment variable with the `REMOTEGLM_` prefix
(`REMOTEGLM_MAX_NEW_TOKENS=256`), or the default written here. Each default is defined in this file only.

    from settings import Settings
    settings = Settings()                      # environment + defaults
    settings = Settings(model="/models/GLM-4.1V-9B-Thinking", quant=4)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = REPO_ROOT / "checkpoints" / "remoteglm-mini"

# Sampling defaults of the original RemoteGLM (VisualGLM-6B) demo; a model's own generation_config.json wins
# over them where it sets a value (see model_adapter.base.resolve_generation).
ORIGINAL_GENERATION_DEFAULTS = {"temperature": 0.8, "top_p": 0.4, "top_k": 100, "repetition_penalty": 1.2}


def default_data_dir() -> Path:
    """Per-user data directory: $XDG_DATA_HOME/remoteglm, else ~/.local/share/remoteglm."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "remoteglm"


class Settings(BaseSettings):
    """Everything a RemoteGLM process can be told: model, generation, storage, serving."""

    model_config = SettingsConfigDict(
        env_prefix="REMOTEGLM_", use_attribute_docstrings=True, extra="ignore", validate_default=True
    )

    # --- model -------------------------------------------------------------------------------------------
    backend: Literal["hf", "openai"] = "hf"
    """Which model backend answers: 'hf' runs a model locally with transformers; 'openai' calls an
    OpenAI-compatible server (vLLM, `python app.py serve`, a cloud API) at --openai-base-url."""

    model: str = str(DEFAULT_MODEL_DIR)
    """Model directory or hub name for the 'hf' backend (any native transformers VLM: GLM-4.1V, Qwen2.5-VL,
    RemoteGLM-mini...), or the served model name for the 'openai' backend. Default: the shipped RemoteGLM-mini."""

    adapter: str | None = None
    """Optional LoRA adapter directory saved by peft (finetune/lora.py writes one), applied on top of --model."""

    quant: Literal[4, 8] | None = None
    """Load the base model quantized with bitsandbytes: 4 (NF4) or 8 bits. Needs the bitsandbytes package."""

    device: str = "auto"
    """'auto' (cuda > mps > cpu), or an explicit torch device such as 'cpu', 'cuda', 'cuda:1'."""

    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights dtype: 'auto' picks bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""

    trust_remote_code: bool = False
    """Allow a checkpoint to run its own Python code. Off by default: only enable for checkpoints you trust."""

    openai_base_url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the OpenAI-compatible server used by the 'openai' backend."""

    openai_api_key: SecretStr = SecretStr("EMPTY")
    """API key sent to the OpenAI-compatible server ('EMPTY' for servers without authentication)."""

    openai_timeout: float = 120.0
    """Seconds before a request to the OpenAI-compatible server times out."""

    # --- generation ----------------------------------------------------------------------------------------
    max_new_tokens: int = Field(512, ge=1)
    """Default number of new tokens for one answer."""

    max_new_tokens_limit: int = Field(4096, ge=1)
    """Upper bound on max_new_tokens that any request may ask for."""

    temperature: float | None = Field(None, ge=0.0)
    """Sampling temperature; 0 means greedy. Unset: the model's generation_config, else 0.8 (original project)."""

    top_p: float | None = Field(None, gt=0.0, le=1.0)
    """Nucleus sampling mass. Unset: the model's generation_config, else 0.4."""

    top_k: int | None = Field(None, ge=0)
    """Top-k sampling. Unset: the model's generation_config, else 100."""

    repetition_penalty: float | None = Field(None, gt=0.0)
    """Repetition penalty. Unset: the model's generation_config, else 1.2."""

    max_image_pixels: int = Field(1024 * 1024, ge=28 * 28)
    """Images larger than this many pixels are downscaled (aspect kept) before the processor sees them."""

    max_history_images: int = Field(1, ge=0)
    """How many of a conversation's most recent images are sent to the model; older ones become a text note."""

    max_question_chars: int = Field(8000, ge=1)
    """Longest question accepted; longer input is refused with a message."""

    # --- speed ------------------------------------------------------------------------------------------------
    max_batch_size: int = Field(16, ge=1)
    """Most requests a local model answers together in one batch (requests arriving while it is busy join the next)."""

    max_queue: int = Field(32, ge=0)
    """Requests that may wait for the next batch of a local model; beyond that new requests are refused as busy."""

    image_cache_mb: float = Field(256.0, ge=0)
    """Memory for cached vision features (per image and model), so follow-up turns skip re-encoding; 0 disables."""

    torch_threads: int | None = Field(None, ge=0)
    """torch CPU threads for a local model. Unset: the measured default (1, see docs/speed.md); 0: torch's own."""

    # --- storage --------------------------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the SQLite database and uploaded images live."""

    database_url: str | None = None
    """Any SQLAlchemy URL (postgresql+psycopg://user:pw@host/db for several replicas). Unset: SQLite in data_dir."""

    image_dir: Path | None = None
    """Directory for uploaded images (content-addressed by SHA-256). Unset: data_dir/images. Share it between
    replicas."""

    max_upload_mb: float = Field(50.0, gt=0)
    """Largest accepted upload, in megabytes."""

    # --- serving ----------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Interface the web chat or API server binds. Use 0.0.0.0 to share on the network (set a login!)."""

    port: int = Field(7860, ge=1, le=65535)
    """Port of the web chat (the API server's default is 8000 unless --port is given)."""

    auth_user: str | None = None
    """One extra web chat login (with auth_password), besides the accounts of `python app.py users add`. Unset:
    accounts only; no accounts either: no login."""

    auth_password: SecretStr | None = None
    """Password of the --auth-user login."""

    api_key: SecretStr | None = None
    """If set, the OpenAI-compatible server requires `Authorization: Bearer <api_key>`."""

    @field_validator("quant", mode="before")
    @classmethod
    def _quant_from_text(cls, value: Any) -> Any:
        if value in ("", "none", "None", None):
            return None
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'remoteglm.db'}"

    @property
    def resolved_image_dir(self) -> Path:
        return self.image_dir or self.data_dir / "images"

    def generation_overrides(self) -> dict[str, Any]:
        """The sampling values the user set explicitly (flags or environment)."""
        names = ("temperature", "top_p", "top_k", "repetition_penalty")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def web_auth_problem(settings: Settings, has_accounts: bool = False) -> str | None:
    """Why the web chat must not start with these login settings (None: it may). `has_accounts`: the database
    holds user accounts (`python app.py users add`).

    Half a login (a user without a password, or the reverse) never works, so it is refused everywhere; a network
    bind without a working login is refused too, since anyone who can reach the port could read every conversation."""
    password = settings.auth_password.get_secret_value() if settings.auth_password else ""
    if bool(settings.auth_user) != bool(password):
        missing = "--auth-password (REMOTEGLM_AUTH_PASSWORD)" if settings.auth_user else "--auth-user"
        return f"the web chat login needs both --auth-user and --auth-password; {missing} is not set"
    if not is_loopback(settings.host) and not password and not has_accounts:
        return (f"refusing to listen on {settings.host or 'all interfaces'} without a login: add an account with "
                "`python app.py users add NAME`, or set --auth-user and REMOTEGLM_AUTH_PASSWORD, or bind --host "
                "127.0.0.1")
    return None


def api_auth_problem(settings: Settings) -> str | None:
    """Why the API server must not start: a network bind without an API key (None: it may)."""
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if not is_loopback(settings.host) and not key:
        return (f"refusing to serve the API on {settings.host or 'all interfaces'} without an API key: set "
                "REMOTEGLM_API_KEY (or --api-key), or bind --host 127.0.0.1")
    return None


# --- settings object -> command-line flags + environment (one helper, used by every command) ------------------------
ENV_PREFIX = "REMOTEGLM_"


def _attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's fields (pydantic reads them itself for its models)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _fields(cls: type) -> list[tuple[str, Any, Any, str, bool]]:
    """(name, type, default, help, required) per field of a pydantic model or a dataclass."""
    if _issubclass(cls, BaseModel):
        out = []
        for name, field in cls.model_fields.items():
            default = "per user" if field.default_factory is not None else field.default
            out.append((name, field.annotation, default, field.description or "", field.is_required()))
        return out
    hints, docs = typing.get_type_hints(cls), _attribute_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append((f.name, hints[f.name], default, docs.get(f.name, ""), default is None and
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))
    return out


def _plain(kind: Any) -> Any:
    """`int | None` -> int, `Optional[Path]` -> Path; other annotations unchanged."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return kind


def _converter(kind: Any):
    """str -> value for one field type (argparse `type=` and environment values)."""
    kind = _plain(kind)
    if kind is bool:
        def to_bool(text: str) -> bool:
            if text.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if text.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return to_bool
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0] if typing.get_args(kind) else str
        return lambda text: tuple(item(x) for x in text.split(",") if x.strip())
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        return lambda text: next((c for c in choices if str(c) == text), text)
    if kind in (int, float, Path):
        return kind
    return str


def _issubclass(kind: Any, base: type) -> bool:
    return isinstance(kind, type) and issubclass(kind, base)


def _nested(kind: Any) -> bool:
    return dataclasses.is_dataclass(kind) or _issubclass(kind, BaseModel)


def add_flags(parser: argparse.ArgumentParser, config: type, *, names: list[str] | None = None, prefix: str = "",
              env_prefix: str = ENV_PREFIX, dest_prefix: str = "") -> None:
    """Add one `--flag` per field of `config` (a pydantic model or a dataclass; nested ones as `--part.field`),
    with the field's docstring, its environment variable and its default as help.

    Flags default to "not given" (argparse.SUPPRESS), so that `config_from_flags` can tell what the user typed
    from the environment and the defaults. `dest_prefix` keeps two configs on one parser apart."""
    for name, kind, default, doc, required in _fields(config):
        if names is not None and name not in names:
            continue
        if _nested(_plain(kind)):
            add_flags(parser, _plain(kind), prefix=f"{prefix}{name}.", env_prefix=_nested_env(env_prefix, name),
                      dest_prefix=dest_prefix)
            continue
        flag = "--" + (prefix + name).replace("_", "-")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        env = f"env {env_prefix}{name.upper()}; " if env_prefix else ""
        # argparse %-formats help strings: a literal % must be doubled
        help_text = f"{doc} [{env}default: {shown}]".replace("%", "%%").strip()
        kwargs: dict[str, Any] = {"dest": dest_prefix + prefix + name, "default": argparse.SUPPRESS, "help": help_text}
        plain = _plain(kind)
        if plain is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = name.upper()
            if not _issubclass(config, BaseModel) or typing.get_origin(plain) is tuple:
                kwargs["type"] = _converter(kind)
                if typing.get_origin(plain) is Literal:
                    kwargs["choices"] = typing.get_args(plain)
            # else: the text goes to pydantic, which converts it and names what is wrong in its own words
        if required:
            kwargs["required"] = True
        parser.add_argument(flag, **kwargs)


def flag_values(args: argparse.Namespace, config: type, *, prefix: str = "", env_prefix: str = ENV_PREFIX,
                dest_prefix: str = "", environment: bool | None = None) -> dict[str, Any]:
    """The values for `config(**values)`: flags the user typed, else (for configs that do not read the environment
    themselves, i.e. everything but pydantic BaseSettings) the `env_prefix` variables; nested configs built."""
    given = vars(args)
    if environment is None:
        environment = not _issubclass(config, BaseSettings)
    values: dict[str, Any] = {}
    for name, kind, _default, _doc, _required in _fields(config):
        if _nested(_plain(kind)):
            part = flag_values(args, _plain(kind), prefix=f"{prefix}{name}.", dest_prefix=dest_prefix,
                               env_prefix=_nested_env(env_prefix, name), environment=environment)
            if part:
                values[name] = _plain(kind)(**part)
            continue
        dest = dest_prefix + prefix + name
        if dest in given:
            values[name] = given[dest]
        elif environment and env_prefix and (env_prefix + name.upper()) in os.environ:
            variable, text = env_prefix + name.upper(), os.environ[env_prefix + name.upper()]
            if _issubclass(config, BaseModel) and typing.get_origin(_plain(kind)) is not tuple:
                values[name] = text  # pydantic converts it (and names what is wrong) as for a flag
                continue
            try:
                values[name] = _converter(kind)(text)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise FlagError(f"environment variable {variable}={text!r}: {exc}") from None
    return values


class FlagError(ValueError):
    """A setting from the environment that does not parse (flags are checked by argparse itself)."""


def _nested_env(env_prefix: str, name: str) -> str:
    """The environment prefix of a nested config's fields: REMOTEGLM_MINI_VISION__EPOCHS ('' stays '')."""
    return f"{env_prefix}{name.upper()}__" if env_prefix else ""


def config_from_flags(args: argparse.Namespace, config: type, **kwargs: Any) -> Any:
    """An instance of `config` from the flags `add_flags` added, the environment and the defaults, in that order."""
    return config(**flag_values(args, config, **kwargs))


def config_from_argv(config: type, argv: list[str] | None = None, *, prog: str | None = None,
                 description: str | None = None, env_prefix: str = ENV_PREFIX) -> Any:
    """`config` from a command line of its own (`argv`, else sys.argv), then the environment, then its defaults;
    a bad value, typed or from the environment, ends with argparse's usage line and exit status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, config, env_prefix=env_prefix)
    try:
        return config_from_flags(parser.parse_args(argv), config, env_prefix=env_prefix)
    except FlagError as exc:
        parser.error(str(exc))


def add_arguments(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """One `--flag` per Settings field (or per name in `names`); see `add_flags`."""
    add_flags(parser, Settings, names=names)


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given on the command line."""
    return config_from_flags(args, Settings)
