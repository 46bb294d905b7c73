"""What the demo orchestrator drives, as narrow protocols: a broker, a server, device agents.

`fleet/demo/real_parts.py` adapts the real broker, server and agent runtime to these; the unit
tests drive the orchestrator with fakes. Keeping the orchestrator on these few methods means a
change in another package's API is fixed in one adapter, not across the demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from fleet.attacks import Attack
from fleet.demo.life import DeviceLife

__all__ = [
    "AgentCounters",
    "AgentHandle",
    "BrokerHandle",
    "DeviceActivity",
    "Evaluation",
    "FleetSetup",
    "Parts",
    "ServerHandle",
]


class DeviceActivity(StrEnum):
    """What the display counts a device as doing (from the agent's state and its simulated life)."""

    TRAINING = "training"
    UPLOADING = "uploading"
    WAITING = "waiting"  # for a model, or for conditions it has not been told about yet
    IDLE = "idle"  # trained on the current model, waiting for a newer one
    UNPLUGGED = "unplugged"
    BUSY = "busy"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Evaluation:
    version: int
    accuracy: float  # the published (serving) model's: what devices run for inference
    macro_f1: float
    iterate_accuracy: float | None = None  # the training iterate's, when it differs


@dataclass(frozen=True)
class AgentCounters:
    updates_sent: int  # ClientUpdate publishes (a re-send after a dropout counts again)
    updates_accepted: int  # Acks received
    updates_rejected: int
    update_bytes: int  # payload bytes of those update publishes
    uplink_bytes: int  # every payload this device published (updates + status)
    downlink_bytes: int  # every payload delivered to it (offers + acks)


@dataclass(frozen=True)
class FleetSetup:
    """Everything the parts need to start one run."""

    run_dir: Path  # per-run folder: keys, server state, agent state folders
    artifacts_dir: Path
    test_file: Path  # server's held-out test set
    device_folders: tuple[Path, ...]
    lives: tuple[DeviceLife, ...]
    fleet: str
    strategy: str
    codec: str
    seed: int
    start: float  # time.monotonic() when the fleet's life clock started
    attack: Attack | None = None  # what hostile devices do (fleet/attacks.py)
    attackers: frozenset[int] = frozenset()  # indices of hostile devices
    defence: str = "default"  # the server's robust-aggregation preset (server/robust)


class BrokerHandle(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def port(self) -> int | None: ...  # the port we bound, None for an external broker

    def stop(self) -> None: ...


class ServerHandle(Protocol):
    def version(self) -> int: ...

    def evaluations(self) -> list[Evaluation]: ...  # every evaluation so far, oldest first

    def accepted(self) -> int: ...

    def rejected(self) -> Mapping[str, int]: ...  # reason -> count

    def privacy(self) -> Mapping[str, float] | None: ...  # DP: epsilon spent, ...; None = off

    def stop(self) -> None: ...


class AgentHandle(Protocol):
    @property
    def device_id(self) -> str: ...

    def activity(self) -> DeviceActivity: ...

    def counters(self) -> AgentCounters: ...

    def set_online(self, online: bool) -> None: ...  # a dropout takes the MQTT link away

    def request_stop(self) -> None: ...  # ask to stop, do not wait: the fleet stops in parallel

    def stop(self) -> None: ...  # stop and wait


class Parts(Protocol):
    def start_broker(self, url: str | None) -> BrokerHandle: ...

    def start_server(self, setup: FleetSetup, broker_url: str) -> ServerHandle: ...

    def start_agent(self, setup: FleetSetup, index: int, broker_url: str) -> AgentHandle: ...
