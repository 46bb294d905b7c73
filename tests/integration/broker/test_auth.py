"""Identity at the door: no anonymous, no wrong password, no certificate-less, no plain TCP,
no revoked certificate."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fleetlearn.provision import init_ca, issue_client_cert
from tests.integration.broker.helpers import link
from tests.support.mosquitto import MosquittoHandle
from transport import BrokerConfig

pytestmark = pytest.mark.integration


def _refused(config: BrokerConfig) -> str:
    """The link's first error; it must never have connected."""
    with link(config, connect=False) as mqtt_link:
        deadline = time.monotonic() + 5.0
        while mqtt_link.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not mqtt_link.wait_connected(0.3)
        assert mqtt_link.connect_count == 0
        assert mqtt_link.last_error is not None
        return mqtt_link.last_error


def test_right_password_connects_wrong_password_is_refused(mosquitto_prod: MosquittoHandle) -> None:
    broker = mosquitto_prod
    with link(broker.client_config("dev-p", listener="password")) as ok:
        assert ok.connected
    error = _refused(broker.client_config("dev-p", listener="password", password="wrong"))
    assert "Not authorized" in error or "Bad user name or password" in error
    error = _refused(broker.client_config("nobody", listener="password", password="x"))
    assert "refused the connection" in error


def test_no_username_is_refused_on_password_listener(mosquitto_prod: MosquittoHandle) -> None:
    cfg = mosquitto_prod.client_config("dev-p", listener="password", username=None, password=None)
    assert "refused the connection" in _refused(cfg)


def test_no_client_certificate_is_refused(mosquitto_prod: MosquittoHandle) -> None:
    cfg = mosquitto_prod.client_config("dev-a", cert_file=None, key_file=None)
    error = _refused(cfg)
    assert "failed" in error  # TLS handshake or connection reset: never a CONNACK


def test_certificate_from_another_ca_is_refused(
    mosquitto_prod: MosquittoHandle, tmp_path: Path
) -> None:
    rogue = init_ca(tmp_path / "rogue-ca", "rogue")
    cert, key = issue_client_cert(rogue, "dev-a", tmp_path / "rogue")
    cfg = mosquitto_prod.client_config("dev-a", cert_file=cert, key_file=key)
    assert "failed" in _refused(cfg)


def test_plain_tcp_is_refused_on_tls_listeners(mosquitto_prod: MosquittoHandle) -> None:
    for port in (mosquitto_prod.tls_port, mosquitto_prod.password_port):
        assert port is not None
        cfg = BrokerConfig(
            f"mqtt://127.0.0.1:{port}",
            "dev-p",
            username="dev-p",
            password=mosquitto_prod.passwords["dev-p"],
            protocol="v311",
            connack_timeout=1.0,
            backoff_initial=0.1,
            backoff_max=0.5,
        )
        assert _refused(cfg)
        # and at the byte level: an MQTT CONNECT in clear gets no CONNACK
        connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0])
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(connect)
            try:
                reply = sock.recv(4)
            except (ConnectionResetError, TimeoutError):
                reply = b""
        assert not reply.startswith(b"\x20")  # 0x20 = CONNACK


def test_revoked_device_certificate_is_refused(mosquitto_prod: MosquittoHandle) -> None:
    broker = mosquitto_prod
    with link(broker.client_config("dev-b")) as before:
        assert before.connected
    broker.revoke("dev-b")  # new CRL + restart
    assert "failed" in _refused(broker.client_config("dev-b"))
    with link(broker.client_config("dev-a")) as other:  # others are unaffected
        assert other.connected


def test_tls_verifies_the_broker(mosquitto_prod: MosquittoHandle, tmp_path: Path) -> None:
    """A device trusting another CA does not talk to this broker (no MITM by a fake broker)."""
    other = init_ca(tmp_path / "other-ca", "other")
    cfg = mosquitto_prod.client_config("dev-a", ca_file=other.cert)
    error = _refused(cfg)
    assert "CERTIFICATE_VERIFY_FAILED" in error
