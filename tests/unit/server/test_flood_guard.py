"""One device must not be able to stop the server or slow its honest devices (outside probe, 2nd).

The probe flooded one enrolled device's own topics with tiny garbage. Every refusal produced one
QoS 1 Ack and every invalid status one QoS 1 clear; paho ran out of its 65,535 message ids,
`publish` raised, and the error stopped the worker. Here, with the in-memory link:

- a publish that fails (the link refuses) is counted and never stops the worker;
- refusal Acks to one device are bounded (QoS 0; rate-limited refusals answered once);
- the status and secagg_up topics are rate limited per device, retained messages on secagg_up
  are ignored and cleared, and a secagg_up message is size-checked before it is decoded.

The same flood against a real Mosquitto: tests/integration/test_server_flood.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import Reason
from protocol.messages import DeviceStatus, decode_ack, encode_status
from protocol.secagg.device import DeviceSession
from protocol.secagg.identity import Enrolment
from protocol.secagg.messages import encode
from protocol.topics import (
    ack_topic,
    secagg_down_topic,
    secagg_up_topic,
    status_topic,
    update_topic,
)
from server.app import ServerApp
from tests.unit.server.factory import update_bytes
from tests.unit.server.test_app import FLEET, FakeLink, _config, _wait
from transport import IncomingMessage, PublishFailed, PublishHandle

GARBAGE = b"\x00garbag"  # seven bytes, as in the probe


class RefusingLink(FakeLink):
    """Refuses every publish while `full` is set, the way MqttLink does when paho has no
    message id left ("Message queue full")."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.refused = 0

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle:
        if self.full:
            self.refused += 1
            raise PublishFailed(topic, "paho refused publish: Message queue full")
        return super().publish(topic, payload, qos, retain)


def _acks(link: FakeLink, device: str) -> list[tuple[bytes, int]]:
    return [(p, q) for t, p, q, _ in link.published if t == ack_topic(FLEET, device)]


def _put(link: FakeLink, topic: str, payload: bytes, n: int = 1, retained: bool = False) -> None:
    for _ in range(n):
        link.queue.put(IncomingMessage(topic, payload, retained))


def _drained(app: ServerApp, link: FakeLink) -> None:
    _wait(lambda: link.queue.empty() and app.status().counts, timeout=30)


@pytest.fixture
def app_link(tmp_path: Path) -> Iterator[tuple[ServerApp, RefusingLink]]:
    link = RefusingLink()
    app = ServerApp(_config(tmp_path), link=link)
    app.start()
    yield app, link
    app.stop()


def test_publish_failures_never_stop_the_worker(app_link: tuple[ServerApp, RefusingLink]) -> None:
    app, link = app_link
    manifest = app.core.manifest
    honest = update_bytes(manifest, np.ones(6, np.float32), device="dev-ok", seq=1)
    link.full = True  # every Ack, clear and offer from now on is refused by the link
    _put(link, update_topic(FLEET, "evil"), GARBAGE, 500)
    _put(link, status_topic(FLEET, "evil"), GARBAGE, 500)
    _put(link, update_topic(FLEET, "dev-ok"), honest)
    assert app.wait_for_version(1, timeout=30), app.error
    _wait(lambda: link.refused >= 1)
    assert app.error is None
    assert app.metrics.publish_failures() >= 1
    link.full = False
    # the honest device heard nothing (its Ack was refused): it re-sends after its ack timeout,
    # and the same bytes are acknowledged as accepted, never applied twice
    _put(link, update_topic(FLEET, "dev-ok"), honest)
    _wait(lambda: len(_acks(link, "dev-ok")) == 1)
    ack = decode_ack(_acks(link, "dev-ok")[0][0])
    assert ack.accepted and ack.seq == 1
    second = update_bytes(manifest, np.ones(6, np.float32), device="dev-ok", seq=2, base=1)
    _put(link, update_topic(FLEET, "dev-ok"), second)
    _wait(lambda: len(_acks(link, "dev-ok")) == 2)
    assert decode_ack(_acks(link, "dev-ok")[1][0]).accepted
    assert app.status().version == 2 and app.error is None


@pytest.fixture
def frozen_app(tmp_path: Path) -> Iterator[tuple[ServerApp, RefusingLink]]:
    """A server whose clock stands still: no token comes back while the flood is processed."""
    link = RefusingLink()
    app = ServerApp(_config(tmp_path), link=link, clock=lambda: 1000.0)
    app.start()
    yield app, link
    app.stop()


def test_refusal_acks_to_a_flooding_device_are_bounded(
    frozen_app: tuple[ServerApp, RefusingLink],
) -> None:
    app, link = frozen_app
    manifest = app.core.manifest
    _put(link, update_topic(FLEET, "evil"), GARBAGE, 20_000)
    honest = update_bytes(manifest, np.ones(6, np.float32), device="dev-ok", seq=1)
    _put(link, update_topic(FLEET, "dev-ok"), honest)
    _wait(lambda: len(_acks(link, "dev-ok")) == 1, timeout=30)
    assert decode_ack(_acks(link, "dev-ok")[0][0]).accepted
    _drained(app, link)
    evil = _acks(link, "evil")
    # before: 20,000 QoS 1 Acks; now the device's refusal budget plus one rate-limited answer
    assert len(evil) == 10 + 1, len(evil)
    assert all(q == 0 for _, q in evil)  # nothing depends on a refusal's delivery
    reasons = [decode_ack(p).reason for p, _ in evil]
    assert reasons.count(Reason.RATE_LIMITED) == 1
    counts = app.status().counts
    assert counts["rate_limited"] + counts["malformed"] == 20_000  # every one still counted


def test_rate_limited_refusals_are_answered_once_per_streak(tmp_path: Path) -> None:
    link = FakeLink()
    app = ServerApp(_config(tmp_path, admission={"rate_per_minute": 6, "rate_burst": 2}), link=link)
    manifest = app.core.manifest
    for seq in range(1, 11):
        payload = update_bytes(manifest, np.ones(6, np.float32), seq=seq, base=seq - 1)
        _put(link, update_topic(FLEET, "dev-1"), payload)
    app.start()
    try:
        _wait(lambda: app.status().counts.get("rate_limited") == 8)
        acks = [decode_ack(p) for p, _ in _acks(link, "dev-1")]
        assert [a.reason for a in acks] == [Reason.OK, Reason.OK, Reason.RATE_LIMITED]
    finally:
        app.stop()


def _status(device: str, state: str = "idle") -> bytes:
    return encode_status(DeviceStatus(device, True, state, None, "", {}, 1.0))


def test_status_flood_is_rate_limited_and_the_last_garbage_still_cleared(tmp_path: Path) -> None:
    now = [1000.0]  # the server's clock, moved by hand
    link = FakeLink()
    app = ServerApp(_config(tmp_path), link=link, clock=lambda: now[0])
    app.start()
    topic = status_topic(FLEET, "evil")

    def clears() -> list[bytes]:
        return [p for t, p, _, _ in link.published if t == topic]

    try:
        _put(link, topic, GARBAGE, 20_000)
        _drained(app, link)
        assert len(clears()) == 30  # the bucket's burst; before: one QoS 1 clear per message
        # valid statuses over the limit, then garbage: the garbage is checked (and cleared) once
        # the device's bucket has a token again, never left parked on the topic
        _put(link, topic, _status("evil"), 50)
        _put(link, topic, GARBAGE)
        _drained(app, link)
        time.sleep(0.3)  # the worker's last batch is done before the clock moves
        assert len(clears()) == 30
        now[0] += 1.0  # two tokens back (120 a minute)
        _wait(lambda: len(clears()) == 31)
        assert clears()[-1] == b"" and app.error is None
    finally:
        app.stop()


def test_a_valid_status_after_garbage_is_not_cleared(
    app_link: tuple[ServerApp, RefusingLink],
) -> None:
    app, link = app_link
    topic = status_topic(FLEET, "dev-1")
    _put(link, topic, GARBAGE, 200)
    _put(link, topic, _status("dev-1"))  # the latest word: valid, so nothing to clear later
    _drained(app, link)
    seen = len([t for t, _, _, _ in link.published if t == topic])
    time.sleep(1.5)  # a token is back (120/min): a pending garbage would be cleared by now
    assert len([t for t, _, _, _ in link.published if t == topic]) == seen


# --- secagg_up ------------------------------------------------------------------------------


@pytest.fixture
def secagg_app(tmp_path: Path) -> Iterator[tuple[ServerApp, FakeLink]]:
    link = FakeLink()
    config = _config(
        tmp_path,
        strategy={"name": "fedbuff", "buffer_size": 4},
        secure_aggregation={"enabled": True, "cohort_size": 4, "min_size": 3},
        admission={"rate_per_minute": 6, "rate_burst": 2},
    )
    app = ServerApp(config, link=link)
    app.start()
    yield app, link
    app.stop()


_ENROLMENT = Enrolment.generate("flood-test")


def _join(app: ServerApp, device: str) -> bytes:
    identity = _ENROLMENT.enrol(device)
    return encode(DeviceSession(device, app.core.manifest.model_id, identity).join())


def test_retained_secagg_join_is_ignored_and_cleared(
    secagg_app: tuple[ServerApp, FakeLink],
) -> None:
    app, link = secagg_app
    topic = secagg_up_topic(FLEET, "ghost")
    _put(link, topic, _join(app, "ghost"), retained=True)  # parked before a restart
    _wait(lambda: (topic, b"", 1, True) in link.published)
    runner = app.secagg
    assert runner is not None and "ghost" not in runner.waiting()
    assert app.status().counts.get("field") == 1
    # the same join sent live is a join
    _put(link, topic, _join(app, "ghost"))
    _wait(lambda: "ghost" in runner.waiting())


def test_oversize_secagg_message_from_a_non_member_is_refused_before_decoding(
    secagg_app: tuple[ServerApp, FakeLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, link = secagg_app
    import server.secagg as runner_module
    from protocol.secagg.messages import AnyUp, decode_up

    decoded: list[int] = []

    def counting_decode_up(data: bytes, cap: int) -> AnyUp:
        decoded.append(len(data))
        return decode_up(data, cap)

    monkeypatch.setattr(runner_module, "decode_up", counting_decode_up)
    big = b"\x91" + b"\xa1x" * 40_000  # 80 kB: far above any join, below the masked-vector cap
    _put(link, secagg_up_topic(FLEET, "dev-1"), big)
    _put(link, secagg_up_topic(FLEET, "dev-2"), _join(app, "dev-2"))
    _wait(lambda: app.secagg is not None and "dev-2" in app.secagg.waiting())
    assert decoded == [len(_join(app, "dev-2"))]  # the big one never reached the decoder
    assert app.status().counts.get("oversize") == 1


def test_secagg_up_is_rate_limited_per_device(
    secagg_app: tuple[ServerApp, FakeLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, link = secagg_app
    runner = app.secagg
    assert runner is not None
    handled: list[str] = []
    real = runner.handle

    def counting_handle(device: str, payload: bytes, now: float, version: int) -> object:
        handled.append(device)
        return real(device, payload, now, version)

    monkeypatch.setattr(runner, "handle", counting_handle)
    _put(link, secagg_up_topic(FLEET, "evil"), GARBAGE, 1_000)
    _put(link, secagg_up_topic(FLEET, "dev-2"), _join(app, "dev-2"))
    _wait(lambda: "dev-2" in runner.waiting())
    assert handled.count("evil") == 2  # the burst; the other 998 never reach the runner
    assert app.status().counts.get("rate_limited") == 998
    assert not [t for t, _, _, _ in link.published if t == secagg_down_topic(FLEET, "evil")]
