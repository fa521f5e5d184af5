"""`python -m server [--model DIR] [--port 8000] [--api-key KEY] [--allowed-image-dir DIR] ...`

The same server as `python app.py serve`, with the server-only limits of `ServerConfig` as flags too."""

from __future__ import annotations

import argparse

from server import serve
from server.serving import ServerConfig
from settings import add_arguments, from_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    for name, field in ServerConfig.model_fields.items():
        parser.add_argument("--" + name.replace("_", "-"), default=None, help=field.description,
                            metavar=name.upper(), dest=f"server_{name}")
    args = parser.parse_args(argv)
    given = {k.removeprefix("server_"): v for k, v in vars(args).items() if k.startswith("server_") and v is not None}
    serve(from_args(args), config=ServerConfig(**given))


if __name__ == "__main__":
    main()
