"""Put a console on a server: one read model registered as the server's observer, one web server."""

from __future__ import annotations

from console.read_model import FleetReadModel
from console.web import ConsoleServer, ListenConfig
from server.app import ServerApp

__all__ = ["attach"]


def attach(app: ServerApp, listen: ListenConfig) -> ConsoleServer:
    """Observe `app` (call before `app.start()`) and start serving; the caller stops both."""
    model = FleetReadModel(app.config.fleet, app.status)
    app.observe(model)
    console = ConsoleServer(model, listen)
    console.start()
    return console
