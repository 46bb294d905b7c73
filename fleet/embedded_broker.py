"""An in-process MQTT 3.1.1 broker (amqtt) on a thread, for the one-command demo and unit-level
tests. Never the production broker: no v5, no ACL, anonymous (FACTS.md). It runs amqtt with
the fixes in fleet/amqtt_fixes.py (a connect/subscribe race, stray retained messages, sockets
left open at shutdown).

    with EmbeddedBroker() as broker:      # binds 127.0.0.1 on a free port
        url = broker.url                  # "mqtt://127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType
from typing import Any

__all__ = ["EmbeddedBroker", "free_port"]

_log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (a tiny race remains until the broker binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the embedded broker listens on loopback only")
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    protocol = "v311"  # amqtt refuses MQTT v5: give BrokerConfig(protocol=broker.protocol)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("embedded broker already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"embedded broker did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"embedded broker failed to start: {self._error}") from self._error
        _log.info("embedded MQTT 3.1.1 broker (amqtt) on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        # asyncio.Runner, like asyncio.run: on exit it cancels and awaits every task still
        # pending (amqtt's per-connection helpers) before closing the loop
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            runner.run(self._serve())

    async def _serve(self) -> None:
        from fleet.amqtt_fixes import FixedBroker  # imported here: only demo/tests need amqtt

        self._stopping = asyncio.Event()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        try:
            broker = FixedBroker(config)
            await broker.start()
        except Exception as exc:  # surfaced to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._broker = broker
        self._ready.set()
        await self._stopping.wait()
        await broker.shutdown()
        await broker.close_connections()  # amqtt's shutdown leaves some accepted sockets open
