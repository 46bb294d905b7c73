"""The status guard clears what a dashboard must not trust: oversize, undecodable, or a status
whose device id is not the one its topic (the broker's grant) names."""

from __future__ import annotations

from protocol.messages import DeviceStatus, encode_status
from server.status_guard import STATUS_MAX_BYTES, StatusGuard


def _status(device_id: str) -> bytes:
    return encode_status(DeviceStatus(device_id, True, "idle", 3, "", {"charging": True}, 1.0))


def test_an_honest_status_is_kept() -> None:
    assert StatusGuard(None).receive("dev-1", _status("dev-1"), 0.0) is False


def test_a_status_impersonating_another_device_is_cleared() -> None:
    """dev-1 may publish only on its own status topic, but could claim to be dev-2 inside it."""
    assert StatusGuard(None).receive("dev-1", _status("dev-2"), 0.0) is True


def test_garbage_and_oversize_statuses_are_cleared() -> None:
    guard = StatusGuard(None)
    assert guard.receive("dev-1", b"\x07garbage", 0.0) is True
    assert guard.receive("dev-1", b"\x00" * (STATUS_MAX_BYTES + 1), 0.0) is True
