"""The embedded broker's fixes to amqtt 0.12.1 (fleet/amqtt_fixes.py), each shown against the
real broker: a SUBSCRIBE during another client's CONNECT, a crowd connecting at once, retained
messages only for one's own filters, and no socket left open at shutdown."""

from __future__ import annotations

import gc
import socket
import threading
import warnings
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet.embedded_broker import EmbeddedBroker
from tests.integration.broker.raw_mqtt import RawClient

pytestmark = pytest.mark.integration

BIG = 1 << 20  # bytes per retained message: 8 of them overflow any loopback socket buffers


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def _publisher(b: EmbeddedBroker, retained: dict[str, bytes]) -> mqtt.Client:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="publisher")
    pub.connect(b.host, b.port)
    pub.loop_start()
    for topic, payload in retained.items():
        info = pub.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published(), topic
    return pub


def _stop(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


def test_subscribe_while_another_client_connects_keeps_that_client(
    broker: EmbeddedBroker,
) -> None:
    # On CONNECT of a resumed session amqtt walks its subscription table and awaits the delivery
    # of each filter's retained messages. A reader that does not read holds it at that await.
    pub = _publisher(broker, {f"big/{i}": bytes([i]) * BIG for i in range(8)})
    first = RawClient(broker.host, broker.port)
    slow = RawClient(broker.host, broker.port, recv_buffer=4096)
    try:
        first.connect("slow", clean_session=False)
        first.subscribe(1, "big/#")
        assert sorted(first.publishes(8)) == [f"big/{i}" for i in range(8)]
        # Same id, persistent session: "slow" takes the session over, with its big/# filter.
        slow.connect("slow", clean_session=False)
        assert slow.data_waiting(10)  # retained messages flow: the broker is inside its loop
        other = RawClient(broker.host, broker.port)
        other.connect("other")
        other.subscribe(1, "other/x")  # a new filter: the table grows under the paused loop
        # (amqtt 0.12.1 sends "other" big/* too before this SUBACK: the bug the next test shows)
        other.close()
        assert sorted(slow.publishes(8)) == [f"big/{i}" for i in range(8)]  # loop resumes
        # "slow"'s session lives on: amqtt answers a SUBSCRIBE only from its message loop,
        # which a crashed CONNECT ("dictionary changed size during iteration") never reaches.
        slow.sock.settimeout(5)
        slow.subscribe(2, "ping/x")
    finally:
        first.close()
        slow.close()
        _stop(pub)


def test_a_crowd_connecting_and_subscribing_at_once(broker: EmbeddedBroker) -> None:
    residents, newcomers, filters = 10, 40, 4
    names = [f"res{i}" for i in range(residents)] + [f"new{i}" for i in range(newcomers)]
    pub = _publisher(broker, {f"r/{n}/{k}": n.encode() for n in names for k in range(filters)})
    closing = threading.Event()
    dropped: list[str] = []  # connections the broker closed under a client
    strays: list[str] = []  # retained messages of filters the client never subscribed to
    clients: list[mqtt.Client] = []
    lock = threading.Lock()

    def start(name: str, gate: threading.Barrier | None) -> threading.Event:
        mine = {f"r/{name}/{k}" for k in range(filters)}
        got: set[str] = set()
        done = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)

        def on_connect(cl: mqtt.Client, *_: object) -> None:
            for topic in sorted(mine):  # one SUBSCRIBE each: the table grows step by step
                cl.subscribe(topic, 1)

        def on_message(_: mqtt.Client, __: object, msg: mqtt.MQTTMessage) -> None:
            if msg.topic not in mine:
                strays.append(msg.topic)
            got.add(msg.topic)
            if got >= mine:
                done.set()

        def on_disconnect(*_: object) -> None:
            if not closing.is_set():
                dropped.append(name)

        c.on_connect, c.on_message, c.on_disconnect = on_connect, on_message, on_disconnect
        with lock:
            clients.append(c)
        if gate is not None:
            gate.wait()
        c.connect(broker.host, broker.port)
        c.loop_start()
        return done

    try:
        for name in names[:residents]:
            assert start(name, None).wait(10), name
        gate = threading.Barrier(newcomers)
        ok: list[str] = []

        def newcomer(name: str) -> None:
            if start(name, gate).wait(15):
                ok.append(name)

        threads = [threading.Thread(target=newcomer, args=(n,)) for n in names[residents:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (dropped, strays) == ([], [])
        assert len(ok) == newcomers
    finally:
        closing.set()
        _stop(*clients, pub)


def test_retained_messages_reach_only_their_subscribers(broker: EmbeddedBroker) -> None:
    pub = _publisher(broker, {"a/1": b"A", "b/1": b"B"})
    a, b = RawClient(broker.host, broker.port), RawClient(broker.host, broker.port)
    try:
        a.connect("a", clean_session=False)
        a.subscribe(1, "a/#")
        assert a.publishes(1) == ["a/1"]
        b.connect("b")
        assert not b.data_waiting(0.5)  # amqtt 0.12.1 sent "b" a/1 here: a's filter, not b's
        assert b.subscribe(1, "b/#") == []
        assert b.publishes(1) == ["b/1"]
        assert not b.data_waiting(0.5)
    finally:
        a.close()
        b.close()
        _stop(pub)


def test_stop_closes_every_accepted_socket() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = EmbeddedBroker()
        b.start()
        silent = socket.create_connection((b.host, b.port), timeout=10)  # never sends CONNECT
        live = RawClient(b.host, b.port)
        live.connect("live")
        live.sock.sendall(bytes([0xC0, 0]))  # PINGREQ: a round trip, so "silent" is accepted
        assert live.read_packet()[0] == 0xD0
        b.stop()
        try:
            assert silent.recv(1) == b""  # the broker closed its end (amqtt 0.12.1 did not)
            assert live.sock.recv(1) == b""
        finally:
            silent.close()
            live.close()
        gc.collect()  # a socket only the collector would close warns here
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
