"""A raw-socket MQTT 3.1.1 client, byte by byte: it can stop reading at a chosen moment, which
paho cannot (the embedded-broker race tests need a client that leaves the broker blocked)."""

from __future__ import annotations

import socket
import struct

__all__ = ["RawClient", "connect_packet", "subscribe_packet"]

CONNACK, PUBLISH, SUBACK = 0x20, 0x30, 0x90


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:  # MQTT variable-length integer: 7 bits a byte, high bit = more follows
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


def connect_packet(client_id: str, clean_session: bool, keepalive: int = 60) -> bytes:
    flags = 0x02 if clean_session else 0x00
    return _packet(
        0x10,
        _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id),
    )


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 0) -> bytes:
    return _packet(0x82, struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos]))


def _topic(publish_body: bytes) -> str:
    (size,) = struct.unpack("!H", publish_body[:2])
    return publish_body[2 : 2 + size].decode()


class RawClient:
    def __init__(self, host: str, port: int, recv_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer is not None:  # before connect: a small TCP window fills fast
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.sock.settimeout(10)
        self.sock.connect((host, port))

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(min(n - len(out), 1 << 16))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            out += chunk
        return bytes(out)

    def read_packet(self) -> tuple[int, bytes]:
        """(packet type, i.e. first byte & 0xF0; body)."""
        first = self._exact(1)[0]
        length, shift = 0, 0
        while True:
            digit = self._exact(1)[0]
            length += (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        return first & 0xF0, self._exact(length)

    def expect(self, packet_type: int) -> bytes:
        kind, body = self.read_packet()
        assert kind == packet_type, (hex(kind), body[:40])
        return body

    def connect(self, client_id: str, clean_session: bool = True) -> None:
        self.send(connect_packet(client_id, clean_session))
        assert self.expect(CONNACK)[1] == 0  # return code 0: accepted

    def subscribe(self, packet_id: int, topic_filter: str) -> list[str]:
        """SUBSCRIBE and wait for its SUBACK; the topics of PUBLISH packets read before it."""
        self.send(subscribe_packet(packet_id, topic_filter))
        before = []
        while True:
            kind, body = self.read_packet()
            if kind != PUBLISH:
                break
            before.append(_topic(body))
        assert kind == SUBACK, (hex(kind), body[:40])
        assert struct.unpack("!H", body[:2])[0] == packet_id and body[2] != 0x80, body
        return before

    def publishes(self, n: int) -> list[str]:
        """Read n PUBLISH packets (QoS 0); their topics."""
        topics = []
        for _ in range(n):
            topics.append(_topic(self.expect(PUBLISH)))
        return topics

    def data_waiting(self, timeout: float) -> bool:
        """Whether the broker has sent bytes not read yet (waits up to `timeout`)."""
        self.sock.settimeout(timeout)
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(10)
