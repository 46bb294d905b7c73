"""RefusalAckGate with hand-picked times: accepted always, RATE_LIMITED once per streak, other
refusals from a per-device bucket."""

from __future__ import annotations

from protocol.errors import Reason
from protocol.messages import Ack
from server.refusal_acks import RefusalAckGate


def _ack(device: str, reason: Reason) -> Ack:
    return Ack(device, 1, reason is Reason.OK, reason, 0, "")


def test_accepted_always_refusals_from_a_bucket_per_device() -> None:
    gate = RefusalAckGate(per_minute=60.0, burst=3)
    assert [gate.allow(_ack("a", Reason.MALFORMED), 0.0) for _ in range(5)] == [True] * 3 + [
        False
    ] * 2
    assert gate.allow(_ack("a", Reason.OK), 0.0)  # an accepted update's Ack is never withheld
    assert gate.allow(_ack("b", Reason.MALFORMED), 0.0)  # another device has its own bucket
    assert gate.allow(_ack("a", Reason.MALFORMED), 1.0)  # one token per second comes back


def test_rate_limited_once_per_streak() -> None:
    gate = RefusalAckGate(per_minute=60.0, burst=1)
    limited = [gate.allow(_ack("a", Reason.RATE_LIMITED), 0.0) for _ in range(1000)]
    assert limited.count(True) == 1 and limited[0]
    assert gate.allow(_ack("a", Reason.OK), 0.0)  # the limit let one through: streak over
    assert gate.allow(_ack("a", Reason.RATE_LIMITED), 0.0)
    assert not gate.allow(_ack("a", Reason.RATE_LIMITED), 0.0)
