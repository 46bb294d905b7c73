"""ServerApp with an in-memory link: Acks after commit, signed retained offers, throttling,
metrics, restart. (The MQTT-level test with a real broker is in tests/integration.)"""

from __future__ import annotations

import queue
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import ConfigError, Reason
from protocol.messages import decode_ack, decode_offer, decode_vector
from protocol.signing import verify_offer
from protocol.topics import ack_topic, global_model_topic, serving_model_topic, update_topic
from server.app import ServerApp
from server.config import DurabilityConfig, ServerConfig, load_config, parse_config
from tests.unit.server.factory import make_artifacts, update_bytes, write_key
from transport import IncomingMessage, PublishHandle

FLEET = "test"


class FakeLink:
    def __init__(self) -> None:
        self.queue: queue.Queue[IncomingMessage] = queue.Queue()
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.subscriptions: list[str] = []
        self.unsubscribed: list[str] = []
        self.connect_count = 1

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.subscriptions.append(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self.unsubscribed.append(topic_filter)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle:
        self.published.append((topic, payload, qos, retain))
        return PublishHandle(topic, payload, qos, retain)

    def incoming(self) -> queue.Queue[IncomingMessage]:
        return self.queue

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _, _ in self.published if t == topic]


def _config(tmp: Path, **extra: object) -> ServerConfig:
    make_artifacts(tmp / "artifacts", 6)
    key, _ = write_key(tmp)
    doc: dict[str, object] = {
        "fleet": FLEET,
        "artifacts": "artifacts",
        "signing_key": key.name,
        "state_dir": "state",
        "strategy": {"name": "fedasync", "alpha": 1.0, "robust": {"enabled": False}},
        "publish": {
            "every_versions": 2,
            "every_seconds": 3600.0,
            "min_interval_seconds": 0,  # these tests count versions, not time
            "codec": "float32",
            "delta_codec": "none",  # the offers carry the iterate (deltas: test_downlink_app.py)
        },
    }
    doc.update(extra)
    return parse_config(doc, tmp)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[ServerApp, FakeLink]]:
    link = FakeLink()
    # one commit per update, so the publish throttle sees every version (group commit, the
    # default, may take the three queued updates in one batch)
    app = ServerApp(_config(tmp_path, durability={"fsync": "always"}), link=link)
    app.start()
    yield app, link
    app.stop()


def _wait(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_acks_offers_and_throttle(running: tuple[ServerApp, FakeLink]) -> None:
    app, link = running
    manifest = app.core.manifest
    initial = link.on(global_model_topic(FLEET, manifest.model_id))
    assert len(initial) == 1 and decode_offer(initial[0]).version == 0  # published on start
    for seq in (1, 2, 3):
        payload = update_bytes(manifest, np.full(6, seq, np.float32), seq=seq, base=seq - 1)
        link.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), payload, False))
    link.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), b"junk", False))
    assert app.wait_for_version(3, timeout=10)
    _wait(lambda: len(link.on(ack_topic(FLEET, "dev-1"))) == 4)
    acks = [decode_ack(p) for p in link.on(ack_topic(FLEET, "dev-1"))]
    assert [a.accepted for a in acks] == [True, True, True, False]
    assert acks[3].reason is Reason.MALFORMED
    offers = [decode_offer(p) for p in link.on(global_model_topic(FLEET, manifest.model_id))]
    assert [o.version for o in offers] == [0, 2]  # every 2 versions; 3 waits for the timer
    assert all(r for t, _, _, r in link.published if "model" in t)  # retained
    np.testing.assert_array_equal(decode_vector(offers[1].weights, manifest), np.full(6, 3.0))
    status = app.status()
    assert status.counts == {"accepted": 3, "malformed": 1} and status.version == 3


def test_offers_are_qos0_retained_and_resent_after_a_reconnect(
    running: tuple[ServerApp, FakeLink],
) -> None:
    """QoS 0: the broker never queues an offer for an offline device, whatever QoS it asked
    for; QoS 0 published while the server's own link was down is lost, so it re-sends."""
    app, link = running
    offer_topic = global_model_topic(FLEET, app.core.manifest.model_id)
    assert [(q, r) for t, _, q, r in link.published if t == offer_topic] == [(0, True)]
    link.connect_count += 1  # the link reconnected
    _wait(lambda: len(link.on(offer_topic)) == 2)
    assert link.on(offer_topic)[1] == link.on(offer_topic)[0]  # the same signed bytes
    time.sleep(0.3)
    assert len(link.on(offer_topic)) == 2  # once per reconnect, not once per loop


def test_offer_signature_verifies(tmp_path: Path) -> None:
    link = FakeLink()
    config = _config(tmp_path)
    app = ServerApp(config, link=link)
    app.start()
    app.stop()
    from protocol.signing import load_private_key

    public = load_private_key(config.signing_key.read_bytes()).public_key()
    offer = decode_offer(link.published[0][1])
    verify_offer(offer, public)
    assert offer.manifest_digest == app.core.manifest.digest


def test_restart_resumes_version(tmp_path: Path) -> None:
    config = _config(tmp_path)
    link = FakeLink()
    with ServerApp(config, link=link) as app:
        payload = update_bytes(app.core.manifest, np.ones(6, np.float32), seq=1)
        link.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), payload, False))
        assert app.wait_for_version(1, timeout=10)
    link2 = FakeLink()
    with ServerApp(config, link=link2) as again:
        assert again.status().version == 1
        assert decode_offer(link2.published[0][1]).version == 1
        # the same update redelivered (QoS 1 after a crash): acked, not applied again
        link2.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), payload, False))
        _wait(lambda: len(link2.on(ack_topic(FLEET, "dev-1"))) == 1)
        assert decode_ack(link2.on(ack_topic(FLEET, "dev-1"))[0]).accepted
        assert again.status().version == 1


def test_metrics_endpoint_on_loopback(tmp_path: Path) -> None:
    link = FakeLink()
    app = ServerApp(_config(tmp_path, metrics={"port": 0}), link=link)
    app.start()
    try:
        link.queue.put(IncomingMessage(update_topic(FLEET, "dev-9"), b"\x00", False))
        _wait(lambda: app.status().counts.get("malformed") == 1)
        assert app.metrics_port
        body = urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics").read()
        text = body.decode()
        assert 'fleetlearn_updates_rejected_total{reason="malformed"} 1.0' in text
        assert "fleetlearn_model_version 0.0" in text
    finally:
        app.stop()


def test_batch_mode_group_commits(tmp_path: Path) -> None:
    link = FakeLink()
    app = ServerApp(_config(tmp_path, durability={"fsync": "batch", "batch_max": 8}), link=link)
    manifest = app.core.manifest
    for seq in range(1, 21):
        payload = update_bytes(manifest, np.ones(6, np.float32), seq=seq, base=seq - 1)
        link.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), payload, False))
    app.start()
    try:
        assert app.wait_for_version(20, timeout=10)
    finally:
        app.stop()
    published = app.published_model()
    assert published is not None and published[0] == 20
    np.testing.assert_array_equal(published[1], np.full(6, 20.0, np.float32))


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fleet"):
        parse_config({"artifacts": "a"}, tmp_path)
    with pytest.raises(ConfigError, match=r"publish\.codec"):
        _config(tmp_path, publish={"codec": "int8"})
    with pytest.raises(ConfigError, match=r"admission\.norm_action"):
        _config(tmp_path, admission={"norm_action": "drop"})
    with pytest.raises(ConfigError, match=r"strategy"):
        _config(tmp_path, strategy={"name": "fedbuff", "buffer_size": 0})
    with pytest.raises(ConfigError, match=r"durability\.fsnyc"):
        _config(tmp_path, durability={"fsnyc": "always"})
    for ratio in (-1, "4", float("nan")):
        with pytest.raises(ConfigError, match=r"durability\.checkpoint_log_ratio"):
            _config(tmp_path, durability={"checkpoint_log_ratio": ratio})
    assert _config(tmp_path, durability={"checkpoint_log_ratio": 0}).durability == (
        DurabilityConfig(checkpoint_log_ratio=0.0)
    )
    bad = tmp_path / "server.toml"
    bad.write_text("fleet = [")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(bad)


def test_config_file_round_trip(tmp_path: Path) -> None:
    _config(tmp_path)  # writes artifacts and key
    (tmp_path / "server.toml").write_text(
        'fleet = "f1"\nartifacts = "artifacts"\nsigning_key = "fleet.key"\nstate_dir = "s"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[strategy]\nname = "fedbuff"\nbuffer_size = 4\n[strategy.staleness]\n'
        'function = "hinge"\na = 2\nb = 3\n[admission]\nmax_norm = 5.0\nmax_staleness = -1\n'
    )
    config = load_config(tmp_path / "server.toml")
    assert config.strategy_params == {"buffer_size": 4}
    assert config.staleness == {"function": "hinge", "a": 2, "b": 3}
    assert config.admission.max_staleness is None and config.admission.max_norm == 5.0
    assert config.state_dir == tmp_path / "s" and config.metrics is None


def test_example_config_parses() -> None:
    example = Path(__file__).resolve().parents[3] / "server" / "example.toml"
    config = load_config(example)
    assert config.strategy == "fedbuff" and config.staleness == {"function": "polynomial", "a": 0.5}
    assert config.metrics is not None and config.metrics.address == "127.0.0.1"


def test_serving_model_published_beside_the_iterate(tmp_path: Path) -> None:
    link = FakeLink()
    config = _config(tmp_path, serving={"decay": 0.5})
    with ServerApp(config, link=link) as app:
        manifest = app.core.manifest
        for seq in (1, 2):  # FedAsync alpha 1: iterate 1, then 1 + 2 = 3
            payload = update_bytes(manifest, np.full(6, seq, np.float32), seq=seq, base=seq - 1)
            link.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), payload, False))
        assert app.wait_for_version(2, timeout=10)
        serving_topic = serving_model_topic(FLEET, manifest.model_id)
        _wait(lambda: len(link.on(serving_topic)) == 2)
    offers = [decode_offer(p) for p in link.on(serving_topic)]
    assert [o.version for o in offers] == [0, 2]
    # versions 1 and 3 averaged uniformly (d = min(0.5, 1/2)): serving 2 while the iterate is 3
    np.testing.assert_array_equal(decode_vector(offers[1].weights, manifest), np.full(6, 2.0))
    iterate = decode_offer(link.on(global_model_topic(FLEET, manifest.model_id))[-1])
    np.testing.assert_array_equal(decode_vector(iterate.weights, manifest), np.full(6, 3.0))


def test_serving_off_publishes_no_serving_offer(tmp_path: Path) -> None:
    link = FakeLink()
    with ServerApp(_config(tmp_path, serving={"decay": 0}), link=link) as app:
        assert not link.on(serving_model_topic(FLEET, app.core.manifest.model_id))


@pytest.mark.parametrize(
    ("serving", "match"),
    [({"decay": 1.0}, "serving.decay"), ({"publish": "yes"}, "serving.publish"),
     ({"window": 3}, "serving.window")],
)  # fmt: skip
def test_serving_config_errors_name_the_key(
    tmp_path: Path, serving: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, serving=serving)


def test_no_ack_or_offer_leaves_before_the_fsync_that_covers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker decodes the next batch while the disk syncs the last one (pipelined group
    commit); an Ack or an offer must still wait for its own fsync."""
    import os
    import threading

    from server.durability import writer

    disk_free = threading.Event()
    real_fdatasync = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        assert disk_free.wait(10)
        real_fdatasync(fd)

    link = FakeLink()
    config = _config(tmp_path, publish={"every_versions": 1, "min_interval_seconds": 0})
    app = ServerApp(config, link=link)
    app.start()  # start-up publishes version 0 with the real fdatasync: nothing to sync yet
    monkeypatch.setattr(writer.os, "fdatasync", slow_fdatasync)
    manifest = app.core.manifest
    offers = global_model_topic(FLEET, manifest.model_id)
    try:
        payload = update_bytes(manifest, np.ones(6, np.float32), seq=1)
        link.queue.put(IncomingMessage(update_topic(FLEET, "dev-1"), payload, False))
        _wait(lambda: app.core.version == 1)  # applied in memory ...
        time.sleep(0.3)
        assert link.on(ack_topic(FLEET, "dev-1")) == []  # ... but not acknowledged
        assert len(link.on(offers)) == 1 and app.status().version == 0
        disk_free.set()
        _wait(lambda: len(link.on(ack_topic(FLEET, "dev-1"))) == 1)
        assert decode_ack(link.on(ack_topic(FLEET, "dev-1"))[0]).accepted
        _wait(lambda: len(link.on(offers)) == 2)
        assert decode_offer(link.on(offers)[1]).version == 1
    finally:
        disk_free.set()
        app.stop()


def test_example_privacy_block_parses_when_uncommented_as_documented() -> None:
    """An operator who follows example.toml's own comment (uncomment [privacy], take the
    aggregator and norm bound out of [strategy.robust]) gets a config the server accepts."""
    example = Path(__file__).resolve().parents[3] / "server" / "example.toml"
    lines = example.read_text().splitlines()
    start = lines.index("# [privacy]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    doc = tomllib.loads(example.read_text() + "\n" + "\n".join(block) + "\n")
    for key in ("aggregator", "norm_multiplier"):
        doc["strategy"]["robust"].pop(key)
    config = parse_config(doc, example.parent)
    assert config.privacy is not None and config.privacy.epsilon > 0
    with pytest.raises(ConfigError, match="norm_multiplier"):
        doc["strategy"]["robust"]["norm_multiplier"] = 3.0
        parse_config(doc, example.parent)
