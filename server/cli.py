"""`fleetlearn server --config server.toml`: run the aggregation server until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.app import ServerApp

__all__ = ["add_arguments", "run", "run_until_signalled"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="server.toml")


def run(args: argparse.Namespace) -> int:
    # Imported here, after fleetlearn.cli configured logging: importing onnxruntime calls
    # logging.basicConfig() (onnxruntime/tools/logger.py), which would otherwise win.
    from server.app import ServerApp
    from server.config import load_config

    return run_until_signalled(ServerApp(load_config(args.config)))


def run_until_signalled(app: ServerApp) -> int:
    """Start `app`, run until SIGTERM/SIGINT (0) or the worker fails (1), then stop it."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    app.start()
    try:
        while not stop.wait(0.5):
            if app.error is not None:
                return 1
    finally:
        app.stop()
    return 0
