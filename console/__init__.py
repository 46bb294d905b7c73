"""The operator's web console: a read model over the server, and the pages that show it."""

from console.attach import attach
from console.read_model import FleetReadModel
from console.web import ConsoleServer, ListenConfig, check_listen

__all__ = ["ConsoleServer", "FleetReadModel", "ListenConfig", "attach", "check_listen"]
