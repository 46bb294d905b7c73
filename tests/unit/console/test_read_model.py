"""The console's read model over a real ServerApp (in-memory link): what the pages would show
agrees with the server's own status, and a device's status cannot speak for another device."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from console.read_model import FleetReadModel
from protocol.messages import DeviceStatus, encode_status
from protocol.topics import status_topic, update_topic
from server.app import ServerApp
from server.status_guard import STATUS_MAX_BYTES
from tests.unit.server.factory import update_bytes
from tests.unit.server.test_app import FLEET, FakeLink, _config
from transport import IncomingMessage


def _status(device: str, state: str = "training", version: int | None = 0, online: bool = True,
            reason: str = "eligible") -> bytes:  # fmt: skip
    return encode_status(
        DeviceStatus(device, online, state, version, reason, {"battery": 80.0}, time.time())
    )


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerApp, FakeLink, FleetReadModel]]:
    link = FakeLink()
    app = ServerApp(_config(tmp_path, durability={"fsync": "always"}), link=link)
    model = FleetReadModel(FLEET, app.status)
    app.observe(model)
    app.start()
    yield app, link, model
    app.stop()


def test_fleet_updates_and_models_match_the_server(
    served: tuple[ServerApp, FakeLink, FleetReadModel],
) -> None:
    app, link, model = served
    manifest = app.core.manifest
    put = link.queue.put
    put(IncomingMessage(status_topic(FLEET, "a"), _status("a", "training", 0), False))
    put(IncomingMessage(status_topic(FLEET, "b"), _status("b", "idle", 0, reason="battery"), False))
    put(IncomingMessage(status_topic(FLEET, "c"), _status("c", online=False, version=None), True))
    for seq in (1, 2):
        payload = update_bytes(manifest, np.ones(6), device="a", seq=seq)
        put(IncomingMessage(update_topic(FLEET, "a"), payload, False))
    wrong_model = update_bytes(manifest, np.ones(6), device="b", seq=1, model_id="0" * 64)
    put(IncomingMessage(update_topic(FLEET, "b"), wrong_model, False))
    _wait(lambda: sum(app.status().counts.values()) == 3)

    fleet = model.fleet()
    assert fleet["devices_total"] == 3 and fleet["online"] == 2
    assert fleet["by_state"] == {"training": 1, "idle": 1, "offline": 1}
    assert fleet["by_version"] == {"0": 2, "none": 1}
    assert fleet["by_reason"] == {"eligible": 2, "battery": 1}
    rows = {r["device_id"]: r for r in fleet["devices"]}
    assert rows["a"]["accepted"] == 2 and rows["a"]["refused"] == 0
    assert rows["b"]["accepted"] == 0 and rows["b"]["refused"] == 1
    assert fleet["server"]["version"] == app.status().version == 2

    updates = model.updates()
    counts = app.status().counts
    assert updates["accepted"] == counts["accepted"] == 2
    assert updates["refused"] == {k: v for k, v in counts.items() if k != "accepted"}
    assert sum(sum(v for k, v in b.items() if k != "t") for b in updates["flow"]) == 3
    assert updates["devices"][0]["device_id"] == "b"  # most refused first

    _wait(lambda: bool(model.models()["releases"]) and model.models()["releases"][-1]["version"]
          == app.status().published_version)  # fmt: skip
    assert model.privacy() == {"enabled": False}
    assert model.fleet(query="b")["devices"][0]["device_id"] == "b"
    assert model.fleet(limit=1)["matched"] == 3 and len(model.fleet(limit=1)["devices"]) == 1


def test_a_status_naming_another_device_or_oversize_is_not_shown(
    served: tuple[ServerApp, FakeLink, FleetReadModel],
) -> None:
    _, link, model = served
    link.queue.put(IncomingMessage(status_topic(FLEET, "mallory"), _status("victim"), False))
    link.queue.put(IncomingMessage(status_topic(FLEET, "big"), b"\x00" * (STATUS_MAX_BYTES + 1),
                                   False))  # fmt: skip
    _wait(lambda: model.fleet()["devices_total"] == 2)
    rows = {r["device_id"]: r for r in model.fleet()["devices"]}
    assert set(rows) == {"mallory", "big"}  # "victim" never appears
    assert rows["mallory"]["state"] == "invalid" and rows["mallory"]["model_version"] is None
    assert rows["big"]["state"] == "invalid"
    # the server clears the bad status; the empty retained message it sends back is shown
    link.queue.put(IncomingMessage(status_topic(FLEET, "mallory"), b"", True))
    _wait(lambda: model.fleet()["by_state"].get("cleared") == 1)


def test_device_records_are_bounded() -> None:
    model = FleetReadModel(FLEET, lambda: None, max_devices=2)  # type: ignore[arg-type,return-value]
    for d in ("a", "b", "c", "d"):
        model.device_message(status_topic(FLEET, d), _status(d), 0.0)
    model.device_message("not/a/device/topic", b"x", 0.0)
    model.device_message(status_topic("other", "e"), _status("e"), 0.0)
    assert len(model._devices) == 2 and model._devices_not_kept == 2
