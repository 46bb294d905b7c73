"""`fleetlearn console --config server.toml`: the aggregation server with its web console.

The console lives in the server's process because what it shows lives there: per-device
outcomes, the versions and their evaluations, the privacy accountant, the cohorts. A separate
process would need a broker identity that reads every device's topics and would still not see
what the server never publishes. It listens on 127.0.0.1:8787 by default; any other address
needs --tls-cert/--tls-key and --token-file (console/web.py `check_listen`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from protocol.errors import ConfigError

if TYPE_CHECKING:
    from console.web import ListenConfig

__all__ = ["add_arguments", "listen_config", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="server.toml")
    parser.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT of the console")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate (chain)")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    parser.add_argument(
        "--token-file", type=Path, default=None, help="access token (HTTP Basic password)"
    )


def listen_config(args: argparse.Namespace) -> ListenConfig:
    from console.web import ListenConfig, parse_listen

    host, port = parse_listen(args.listen)
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"console: --token-file: {exc}") from exc
        if len(token) < 16:
            raise ConfigError("console: the access token must have at least 16 characters")
    return ListenConfig(host, port, args.tls_cert, args.tls_key, token)


def run(args: argparse.Namespace) -> int:
    from console.attach import attach
    from console.web import check_listen
    from server.app import ServerApp
    from server.cli import run_until_signalled
    from server.config import load_config

    listen = listen_config(args)
    check_listen(listen)  # before the server starts: a refused address costs nothing
    app = ServerApp(load_config(args.config))
    console = attach(app, listen)
    print(f"console: {console.url}/fleet", flush=True)
    try:
        return run_until_signalled(app)
    finally:
        console.stop()
