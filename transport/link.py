"""MqttLink: one paho-mqtt client, its own reconnect loop, limits checked before sending.

Threads: `start()` runs one network thread that connects, calls paho's `loop()`, and on any loss
waits a jittered, capped exponential back-off (transport/backoff.py) before reconnecting; paho's
built-in reconnect has no jitter, so it is not used. Callbacks run on that thread and only record
state or enqueue: received messages go to `incoming()`, a queue.Queue the owner drains.

Protocol: v5 when the broker speaks it; with protocol "auto" a refusal of v5 (CONNACK "unsupported
protocol version", or the connection closed before any CONNACK, as amqtt does) switches this link
to 3.1.1 for good. Sessions are persistent unless `clean_start` (v5: clean_start=False plus a
SessionExpiryInterval, FACTS.md; 3.1.1: clean_session=False). Subscriptions are renewed after
every CONNACK, so a broker that lost our session (restart without persistence) still delivers.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocol.errors import ConfigError, FleetlearnError
from transport.backoff import Backoff
from transport.config import BrokerConfig, ProtocolChoice
from transport.errors import OversizeMessage, PublishFailed
from transport.handles import IncomingMessage, LinkState, PublishHandle
from transport.limits import publish_packet_size

__all__ = ["MqttLink"]

_log = logging.getLogger(__name__)
_UNSUPPORTED_PROTOCOL = 132  # v5 CONNACK reason "Unsupported protocol version"
_LOOP_TIMEOUT = 0.2  # seconds one paho loop() may block; bounds how fast stop() is noticed


class _Client(mqtt.Client):
    """paho's Client, minus a socket leak: paho 2.2 drops the SSLSocket unclosed when the TLS
    handshake fails (bad CA, no client certificate, plain listener). Our context always checks
    host names, so the wrap below is paho's own minus its no-SNI fallback."""

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        assert self._ssl_context is not None
        ssl_sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
        )
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock


class MqttLink:
    def __init__(
        self, config: BrokerConfig, *, will: tuple[str, bytes, bool] | None = None
    ) -> None:
        self._config = config
        self._endpoint = config.endpoint
        self._will = will
        self._incoming: queue.Queue[IncomingMessage] = queue.Queue()
        self._lock = (
            threading.Lock()
        )  # guards handles/early/subscriptions; never held in paho calls
        self._swap_lock = threading.Lock()  # guards which paho client is current (v5 -> 3.1.1)
        self._subscriptions: dict[str, int] = {}
        self._unwanted: set[str] = set()  # filters a persistent session may still hold: dropped
        self._handles: dict[int, PublishHandle] = {}
        self._early: dict[int, tuple[int, str]] = {}  # PUBACKs that beat publish() registering
        self._state = LinkState.STOPPED
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._v5 = config.protocol != ProtocolChoice.V311
        self._settled = config.protocol != ProtocolChoice.AUTO
        self._fallback = False
        self._connack_seen = False
        self._broker_max: int | None = None
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        self.last_error: str | None = None  # why the last connect failed or the link dropped
        self.connect_count = 0  # successful CONNACKs, for tests and logs
        self._client = self._new_client()

    # ----------------------------------------------------------------- public face
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def protocol(self) -> str:
        return "5" if self._v5 else "3.1.1"

    @property
    def max_packet_size(self) -> int | None:
        """The limit publish() enforces: the smaller of config and the v5 CONNACK value."""
        return self._limit()[0]

    def incoming(self) -> queue.Queue[IncomingMessage]:
        return self._incoming

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MqttLink already started")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{self._config.client_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no last will) and end the network thread."""
        self._stop.set()
        if self._connected.is_set():
            self._client.disconnect()  # paho is thread-safe here; it also wakes the loop at once
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._connected.clear()
        self._state = LinkState.STOPPED

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        with self._lock:
            self._subscriptions[topic_filter] = qos
            self._unwanted.discard(topic_filter)
        if self.connected:
            self._client.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        """Drop a filter, also from a persistent session kept from an earlier run: the broker
        keeps a session's subscriptions until told otherwise (issue 15: a server switched to a
        shared group still held its plain subscription and got every update twice). Sent now
        if connected, and after every CONNACK (before our own SUBSCRIBEs)."""
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
            self._unwanted.add(topic_filter)
        if self.connected:
            self._client.unsubscribe(topic_filter)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle:
        """Queue one message; while disconnected QoS 1 waits in paho's session queue.

        Raises OversizeMessage before sending if the packet exceeds the broker's limit, and
        PublishFailed if paho will not take it (no message id left, invalid topic).
        """
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        limit, source = self._limit()
        size = publish_packet_size(topic, len(payload), qos, v5=self._v5)
        if limit is not None and size > limit:
            raise OversizeMessage(topic, size, limit, source)
        handle = PublishHandle(topic, bytes(payload), qos, retain)
        with self._swap_lock:
            self._publish_on(self._client, handle)
        return handle

    # ----------------------------------------------------------------- internals
    def _limit(self) -> tuple[int | None, str]:
        configured, announced = self._config.max_packet_size, self._broker_max
        if announced is not None and (configured is None or announced < configured):
            return announced, "announced in the broker's CONNACK"
        return configured, "configured"

    def _publish_on(self, client: mqtt.Client, handle: PublishHandle) -> None:
        try:
            info = client.publish(handle.topic, handle.payload, handle.qos, handle.retain)
        except ValueError as exc:  # paho's checks: wildcard or over-long topic, huge payload
            raise PublishFailed(handle.topic, f"paho refused it: {exc}") from exc
        if info.rc == mqtt.MQTT_ERR_NO_CONN and handle.qos == 0:
            handle._complete(0, "dropped: QoS 0 while disconnected")  # at most once, by definition
            return
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # e.g. MQTT_ERR_QUEUE_SIZE: all 65,535 message ids are taken by QoS 1 publishes
            # still waiting for their PUBACK (FACTS.md)
            raise PublishFailed(handle.topic, f"paho refused it: {mqtt.error_string(info.rc)}")
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._handles[info.mid] = handle
        if early is not None:
            handle._complete(*early)

    def _new_client(self) -> mqtt.Client:
        cfg = self._config
        kwargs: dict[str, Any] = {}
        if not self._v5:
            kwargs["clean_session"] = cfg.clean_start
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            **kwargs,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if self._endpoint.tls:
            client.tls_set_context(_tls_context(cfg))
        if self._will is not None:
            topic, payload, retain = self._will
            client.will_set(topic, payload, qos=1, retain=retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        # Without a write callback paho writes to the socket from whichever thread publishes; with
        # TLS, a write racing the network thread's read corrupts the session ("bad record mac").
        # A no-op callback makes publish only queue and wake the network thread, which writes.
        client.on_socket_register_write = _queue_only
        return client

    def _connect(self, client: mqtt.Client) -> None:
        cfg, ep = self._config, self._endpoint
        self._connack_seen = False
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0 if cfg.clean_start else cfg.session_expiry
            client.connect(
                ep.host, ep.port, cfg.keepalive, clean_start=cfg.clean_start, properties=props
            )
        else:
            client.connect(ep.host, ep.port, cfg.keepalive)
        # paho never sets TCP_NODELAY: 44 ms -> 1.2 ms per 100 kB QoS 1 message (FACTS.md)
        sock = client.socket()
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            client = self._client
            self._state = LinkState.CONNECTING
            try:
                self._connect(client)
            except (
                OSError,
                ValueError,
            ) as exc:  # refused, unreachable, TLS handshake (ssl.SSLError)
                self.last_error = f"connect to {self._endpoint} failed: {exc}"
                _log.warning("%s", self.last_error)
            else:
                self._serve(client)
                if (
                    self._v5
                    and not self._settled
                    and not self._connack_seen
                    and not self._stop.is_set()
                ):
                    self._fallback = True  # closed before any CONNACK: a 3.1.1-only broker
            if self._stop.is_set():
                break
            if self._fallback:
                self._switch_to_v311()
                continue
            self._state = LinkState.BACKING_OFF
            self._stop.wait(self._backoff.next_delay())
        self._state = LinkState.STOPPED

    def _serve(self, client: mqtt.Client) -> None:
        rc = mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + self._config.connack_timeout
        while not self._stop.is_set() and rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop(timeout=_LOOP_TIMEOUT)
            if not self._connack_seen and time.monotonic() > deadline:
                # amqtt misreads a v5 CONNECT and never answers: treat silence as a refusal
                self.last_error = (
                    f"no CONNACK from {self._endpoint} within {self._config.connack_timeout} s"
                )
                _log.warning("%s", self.last_error)
                client.disconnect()  # paho closes the socket once DISCONNECT is written
                break
        if self._stop.is_set() and self._connected.is_set():
            client.disconnect()  # clean: the broker discards the last will
            for _ in range(5):
                if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        self._connected.clear()

    def _switch_to_v311(self) -> None:
        _log.info("broker %s refused MQTT v5; using MQTT 3.1.1", self._endpoint)
        self._fallback = False
        with self._swap_lock:
            self._v5 = False
            self._settled = True
            self._client = self._new_client()
            with self._lock:
                pending = [h for h in self._handles.values() if not h.done]
                self._handles.clear()
                self._early.clear()
            for handle in pending:  # queued on the v5 client before any CONNACK: move them over
                try:
                    self._publish_on(self._client, handle)
                except FleetlearnError as exc:  # on the network thread: settle it, never raise
                    _log.warning("%s", exc)
                    handle._complete(0x80, f"not sent: {exc}")

    # ----------------------------------------------------------------- paho callbacks
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connack_seen = True
        if reason.is_failure:
            if self._v5 and not self._settled and reason.value == _UNSUPPORTED_PROTOCOL:
                self._fallback = True
            self.last_error = f"broker {self._endpoint} refused the connection: {reason}"
            _log.error("%s", self.last_error)
            return
        self._settled = True
        announced = getattr(props, "MaximumPacketSize", None) if self._v5 else None
        self._broker_max = int(announced) if announced is not None else None
        self.connect_count += 1
        self._backoff.reset()
        # Subscribe here, inside the CONNACK handler: paho re-sends the messages queued while
        # offline only after this callback, so the broker sees our SUBSCRIBE first. Otherwise a
        # server's first offer can reach a device, whose reply arrives before the server's
        # subscription exists and is dropped (seen: PUBACK rc16 "no matching subscribers").
        with self._lock:
            subs = list(self._subscriptions.items())
            unwanted = sorted(self._unwanted)
        if unwanted:
            client.unsubscribe(unwanted)
        if subs:
            client.subscribe(subs)
        self._state = LinkState.CONNECTED
        self._connected.set()
        _log.info(
            "connected to %s (MQTT %s, session present: %s, max packet %s)",
            self._endpoint,
            self.protocol,
            flags.session_present,
            self.max_packet_size,
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stop.is_set():
            return
        if was_connected:
            self.last_error = f"connection to {self._endpoint} lost: {reason}"
        elif not self._connack_seen:  # e.g. TLS 1.3: a missing client cert is refused after
            self.last_error = f"connection to {self._endpoint} failed before CONNACK: {reason}"
        _log.warning("%s", self.last_error)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            _log.warning("dropped a message whose topic is not UTF-8")
            return
        self._incoming.put(IncomingMessage(topic, bytes(msg.payload), bool(msg.retain)))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        result = (int(reason.value), str(reason))
        with self._lock:
            handle = self._handles.pop(mid, None)
            if handle is None:
                self._early[mid] = result
        if handle is not None:
            handle._complete(*result)


def _queue_only(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's register-write hook: nothing to do, the network thread's loop() does the writing."""


def _tls_context(cfg: BrokerConfig) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(cfg.ca_file) if cfg.ca_file else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cfg.cert_file is not None and cfg.key_file is not None:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"broker TLS files (ca_file={cfg.ca_file}, cert_file={cfg.cert_file}, "
            f"key_file={cfg.key_file}): {exc}"
        ) from exc
    return ctx
