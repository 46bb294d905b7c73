"""The real server (server/app.py ServerApp) behind fleet.demo.parts.ServerHandle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.demo.parts import FleetSetup, ServerHandle

__all__ = ["ServerTuning", "start_server"]


@dataclass(frozen=True)
class ServerTuning:
    fedasync_alpha: float = 0.6


def start_server(
    setup: FleetSetup,
    broker_url: str,
    tuning: ServerTuning,
    embedded: bool,
    broker_extra: dict[str, Any],
) -> ServerHandle:
    raise NotImplementedError("waiting for server/app.py")
