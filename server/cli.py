"""`fleetlearn server --config server.toml`: run the aggregation server until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="server.toml")


def run(args: argparse.Namespace) -> int:
    # Imported here, after fleetlearn.cli configured logging: importing onnxruntime calls
    # logging.basicConfig() (onnxruntime/tools/logger.py), which would otherwise win.
    from server.app import ServerApp
    from server.config import load_config

    config = load_config(args.config)
    app = ServerApp(config)
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
