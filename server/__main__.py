"""`python -m server [--model DIR] [--port 8000] [--api-key KEY] [--allowed-image-dir DIR] [--max-waiting N] ...`

The same server as `python app.py serve`, with the server-only limits of `ServerConfig` as flags too."""

from __future__ import annotations

import argparse
import sys

from server import add_server_arguments, config_from_args, serve
from settings import add_arguments, api_auth_problem, from_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    settings = from_args(args)
    if problem := api_auth_problem(settings):
        print(f"错误 error: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)
    serve(settings, config=config_from_args(args))


if __name__ == "__main__":
    main()
