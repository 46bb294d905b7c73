"""Stop everything a demo started, in reverse order, even after Ctrl-C, and prove the port is free.

Every broker, server, agent and thread the demo starts registers its stop here right after it
starts. `close()` runs them last-in first-out; one failing stop is logged and the rest still run.
A second Ctrl-C during teardown is deferred until teardown is done: a half-stopped fleet with a
bound port is worse than one more second of waiting.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

__all__ = ["Teardown", "free_port", "port_is_free", "wait_port_free"]

_log = logging.getLogger(__name__)


class Teardown:
    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def add(self, name: str, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stops.append((name, stop))

    def __len__(self) -> int:
        return len(self._stops)

    def close(self) -> list[str]:
        """Run every stop (newest first); returns the names whose stop raised."""
        failed: list[str] = []
        interrupted: list[int] = []
        previous = None
        if threading.current_thread() is threading.main_thread():

            def defer(signum: int, frame: FrameType | None) -> None:
                interrupted.append(signum)

            previous = signal.signal(signal.SIGINT, defer)
        try:
            while True:
                with self._lock:
                    if not self._stops:
                        break
                    name, stop = self._stops.pop()
                try:
                    stop()
                except Exception:
                    _log.exception("stopping %s failed", name)
                    failed.append(name)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if interrupted:
            raise KeyboardInterrupt
        return failed

    def __enter__(self) -> Teardown:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just had free on `host` (bind to 0, read it, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a listener could bind `host:port` now (SO_REUSEADDR, like any server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_port_free(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not port_is_free(port, host):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
