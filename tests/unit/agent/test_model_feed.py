"""The agent taking downlink deltas: from the server's own chain (server/downlink.py) through the
runtime with fakes at the edges. A device follows deltas bit for bit, falls back to the whole
offer when it missed versions or a relay tampered, and keeps its model across restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from agent.model_feed import PROBE_S, SAVE_EVERY_S
from protocol.downlink import decode_delta, encode_delta
from protocol.messages import ModelOffer, encode_offer, encode_vector
from protocol.signing import generate_keypair, sign_delta, sign_offer
from protocol.topics import (
    global_model_topic,
    model_delta_topic,
    serving_delta_topic,
    serving_model_topic,
)
from server.downlink import DownlinkChain, signed_delta_bytes
from tests.unit.agent.fakes import MANIFEST, FakeLink
from tests.unit.agent.test_runtime import KEY, RecordingModels, Rig, rig

WHOLE = global_model_topic("home", MANIFEST.model_id)
DELTA = model_delta_topic("home", MANIFEST.model_id)


class Server:
    """The server's publishing step, over a made-up trajectory of iterates."""

    def __init__(self) -> None:
        self.chain = DownlinkChain(MANIFEST, "float32", {"name": "int8"})
        self.rng = np.random.default_rng(0)
        self.iterate = self.rng.normal(0, 1, MANIFEST.num_params).astype(np.float32)
        self.whole: dict[int, bytes] = {}
        self.deltas: dict[int, bytes] = {}
        self.published: dict[int, np.ndarray] = {}

    def publish(self, version: int) -> None:
        self.iterate = self.iterate + self.rng.normal(0, 0.1, self.iterate.size).astype(np.float32)
        published, delta = self.chain.propose(self.iterate, version)
        offer = ModelOffer(
            MANIFEST.model_id,
            version,
            MANIFEST.digest,
            encode_vector(published.weights, {"name": "float32"}),
            1.7e9,
        )
        self.whole[version] = encode_offer(sign_offer(offer, KEY))
        if delta is not None:
            self.deltas[version] = signed_delta_bytes(delta, KEY, fedprox_mu=0.0, privacy={})
        self.published[version] = published.weights
        self.chain.commit(published)


def _poll(r: Rig) -> None:
    r.agent.poll(0.0)


def _holds(r: Rig, server: Server, version: int) -> None:
    held = r.agent.offer
    assert held is not None and held.version == version
    assert held.weights.tobytes() == server.published[version].tobytes()  # bit for bit


def _following(tmp_path: Path) -> tuple[Rig, Server]:
    """A device that took v1 whole and v2 as a delta: on deltas, off the global topic."""
    server = Server()
    r = rig(tmp_path)
    assert WHOLE in r.link.subscriptions and DELTA in r.link.subscriptions  # a newcomer
    server.publish(1)
    r.link.deliver(WHOLE, server.whole[1])
    _poll(r)
    _holds(r, server, 1)
    server.publish(2)
    r.link.deliver(DELTA, server.deltas[2])
    _poll(r)
    _holds(r, server, 2)
    assert WHOLE not in r.link.subscriptions and r.agent.feed.deltas_applied == 1
    return r, server


def test_a_device_follows_deltas_and_leaves_the_whole_offers(tmp_path: Path) -> None:
    r, server = _following(tmp_path)
    for version in (3, 4, 5):
        server.publish(version)
        r.link.deliver(DELTA, server.deltas[version])
        _poll(r)
        _holds(r, server, version)
    assert r.agent.feed.deltas_applied == 4 and WHOLE not in r.link.subscriptions


def test_a_device_that_missed_versions_gets_the_whole_model(tmp_path: Path) -> None:
    r, server = _following(tmp_path)
    server.publish(3)  # missed (offline, QoS 0)
    server.publish(4)
    r.link.deliver(DELTA, server.deltas[4])  # v3 -> v4 does not apply to v2
    _poll(r)
    _holds(r, server, 2)
    assert WHOLE in r.link.subscriptions  # the broker now sends the retained whole v4
    r.link.deliver(WHOLE, server.whole[4])
    _poll(r)
    _holds(r, server, 4)
    server.publish(5)
    r.link.deliver(DELTA, server.deltas[5])
    _poll(r)
    _holds(r, server, 5)
    assert WHOLE not in r.link.subscriptions  # back on deltas


def _altered(wire: bytes) -> bytes:
    delta = decode_delta(wire)
    data = bytearray(delta.delta.data)
    data[0] ^= 0x40
    return encode_delta(
        dataclasses.replace(delta, delta=dataclasses.replace(delta.delta, data=bytes(data)))
    )


def test_a_relay_altering_reordering_or_replaying_deltas_changes_nothing(tmp_path: Path) -> None:
    r, server = _following(tmp_path)
    server.publish(3)
    server.publish(4)
    lying = sign_delta(
        dataclasses.replace(decode_delta(server.deltas[3]), result_digest="ab" * 32),
        generate_keypair()[0],  # a relay holds no fleet key: it signs with its own
    )
    attacks = [
        _altered(server.deltas[3]),  # altered bytes: the signature fails
        encode_delta(lying),  # re-signed by someone else
        server.deltas[4],  # reordered: v3 -> v4 before v2 -> v3
        server.deltas[2],  # replayed: v1 -> v2 again
        b"\x93junk",  # not a delta at all
    ]
    for attack in attacks:
        r.link.deliver(DELTA, attack)
        _poll(r)
        _holds(r, server, 2)  # the model it had, untouched
    assert WHOLE in r.link.subscriptions  # falls back to the (signed) whole offer
    assert r.agent.feed.deltas_refused == 3  # altered, forged, junk (reorder: a base mismatch)
    r.link.deliver(DELTA, server.deltas[3])  # the genuine one still applies
    _poll(r)
    _holds(r, server, 3)


def test_a_signed_delta_that_reconstructs_other_bits_is_refused(tmp_path: Path) -> None:
    r, server = _following(tmp_path)
    server.publish(3)
    lying = sign_delta(
        dataclasses.replace(decode_delta(server.deltas[3]), result_digest="ab" * 32), KEY
    )
    r.link.deliver(DELTA, encode_delta(lying))
    _poll(r)
    _holds(r, server, 2)
    assert WHOLE in r.link.subscriptions and r.agent.feed.deltas_refused == 1


def test_the_held_model_survives_a_restart_and_takes_the_next_delta(tmp_path: Path) -> None:
    r, server = _following(tmp_path)
    r.agent.stop()  # saves what SAVE_EVERY_S held back
    link = FakeLink()
    r2 = rig(tmp_path, link=link)  # same state folder
    _holds(r2, server, 2)
    assert DELTA in link.subscriptions and WHOLE not in link.subscriptions
    server.publish(3)
    link.deliver(DELTA, server.deltas[3])
    _poll(r2)
    _holds(r2, server, 3)


def test_a_crash_between_saves_costs_one_whole_offer(tmp_path: Path) -> None:
    """v2 arrived within SAVE_EVERY_S of v1's save: a crash (no stop) restarts on v1, and the
    next delta (v2 -> v3) fails its base digest: the whole offer, never a wrong model."""
    _r, server = _following(tmp_path)
    r2 = rig(tmp_path, link=FakeLink())
    _holds(r2, server, 1)
    server.publish(3)
    r2.link.deliver(DELTA, server.deltas[3])
    _poll(r2)
    _holds(r2, server, 1)
    assert WHOLE in r2.link.subscriptions
    r2.link.deliver(WHOLE, server.whole[3])
    _poll(r2)
    _holds(r2, server, 3)


def test_the_held_model_is_saved_at_most_every_save_period(tmp_path: Path) -> None:
    r, _server = _following(tmp_path)  # v1 saved at once, v2 held back
    meta = tmp_path / "state" / "held_model.json"
    assert '"version": 1' in meta.read_text()
    r.clock.now += SAVE_EVERY_S
    _poll(r)
    assert '"version": 2' in meta.read_text()


def test_a_damaged_held_model_is_dropped_for_the_whole_offer(tmp_path: Path) -> None:
    _following(tmp_path)
    weights = tmp_path / "state" / "held_model.npy"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    r2 = rig(tmp_path, link=FakeLink())
    assert r2.agent.offer is None and WHOLE in r2.link.subscriptions


def test_no_delta_after_connecting_or_a_cleared_topic_means_whole_offers(tmp_path: Path) -> None:
    _r, server = _following(tmp_path)
    r2 = rig(tmp_path, link=FakeLink())  # restarted: holds v2, probes for the retained delta
    r2.clock.now += PROBE_S - 1
    _poll(r2)
    assert WHOLE not in r2.link.subscriptions
    r2.clock.now += 2
    _poll(r2)
    assert WHOLE in r2.link.subscriptions  # a server without deltas: whole offers it is
    r3 = rig(tmp_path / "other", link=FakeLink())
    r3.link.deliver(WHOLE, server.whole[2])
    r3.link.deliver(DELTA, server.deltas[2])  # current: deltas lead on from v2
    _poll(r3)
    assert WHOLE not in r3.link.subscriptions
    r3.link.deliver(DELTA, b"")  # the server cleared the delta topic
    _poll(r3)
    assert WHOLE in r3.link.subscriptions


def test_local_apps_get_the_serving_model_through_its_own_deltas(tmp_path: Path) -> None:
    serving_whole = serving_model_topic("home", MANIFEST.model_id)
    serving_delta = serving_delta_topic("home", MANIFEST.model_id)
    assert serving_delta not in rig(tmp_path / "no-apps").link.subscriptions  # nothing to serve
    models = RecordingModels()
    r = rig(tmp_path, models=models)
    assert serving_whole in r.link.subscriptions and serving_delta in r.link.subscriptions
    server = Server()  # the serving average's own chain
    server.publish(1)
    server.publish(2)
    r.link.deliver(serving_whole, server.whole[1])
    r.link.deliver(serving_delta, server.deltas[2])
    _poll(r)
    assert [(k, v) for k, v, _ in models.saved] == [("global", 1), ("global", 2)]
    assert models.saved[-1][2].tobytes() == server.published[2].tobytes()
    assert serving_whole not in r.link.subscriptions  # on deltas from here
    assert r.agent.offer is None  # the training model is another feed
