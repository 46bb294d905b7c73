"""Enrol and revoke on a RUNNING broker, through the dynamic-security plugin's control topic.

The plugin reads its JSON file only at start-up (SIGHUP does not reload it): before `--live`, a
revoked device kept its connection and its rights until the next restart (the probe: 8 acks in
8 s after revoke + SIGHUP). Everything here runs what an operator runs (`fleetlearn broker` CLI
provisioning, the committed mosquitto.prod.conf with only ports and paths rewritten).
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.embedded_broker import free_port
from fleetlearn.provision_cli import add_arguments, run
from protocol import topics
from protocol.errors import FleetlearnError
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import CONF_DIR, localize_conf, require_mosquitto
from transport import BrokerConfig, IncomingMessage, MqttLink, PublishRefused

pytestmark = pytest.mark.integration

FLEET = "test"


@dataclass
class CliBroker:
    """Mosquitto on files made by the `fleetlearn broker` CLI (root = its --dir)."""

    root: Path
    ports: dict[int, int]
    proc: subprocess.Popen[bytes]
    log: Path

    def cli(self, *argv: str) -> int:
        return broker_cli(self.root, *argv)

    def url(self, listener: int) -> str:
        return f"mqtts://127.0.0.1:{self.ports[listener]}"

    def password_config(self, name: str, password: str) -> BrokerConfig:
        return BrokerConfig(
            url=self.url(8884),
            client_id=name,
            username=name,
            password=password,
            ca_file=self.root / "ca" / "ca.crt",
            backoff_initial=0.2,
            backoff_max=0.5,
        )

    def cert_config(self, name: str) -> BrokerConfig:
        folder = self.root.parent / "on-device" / name  # revoke-device deletes devices/<name>
        if not folder.is_dir():
            shutil.copytree(self.root / "devices" / name, folder)
        return BrokerConfig(
            url=self.url(8883),
            client_id=name,
            ca_file=self.root / "ca" / "ca.crt",
            cert_file=folder / "device.crt",
            key_file=folder / "device.key",
            backoff_initial=0.2,
            backoff_max=0.5,
        )

    def device_password(self, name: str) -> str:
        doc = tomllib.loads((self.root / "devices" / name / "agent.toml").read_text())
        return str(doc["broker"]["password"])

    def server_config(self) -> BrokerConfig:
        secret = (self.root / "servers" / "fleet-server" / "password").read_text().strip()
        return self.password_config("fleet-server", secret)


def broker_cli(root: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(["--dir", str(root), *argv]))


@contextmanager
def cli_broker(
    tmp_path: Path, *, cert_devices: list[str], password_devices: list[str]
) -> Iterator[CliBroker]:
    root = tmp_path / "secrets"
    broker_cli(root, "init-ca", "--fleet", FLEET)
    broker_cli(root, "server-cert", "--host", "127.0.0.1")
    broker_cli(root, "acl", "--fleet", FLEET)
    broker_cli(root, "enrol-server")
    broker_cli(root, "enrol-admin")
    for name in cert_devices:
        broker_cli(root, "enrol-device", name, "--fleet", FLEET, "--url", "mqtts://x:8883")
    for name in password_devices:
        broker_cli(
            root, "enrol-device", name, "--fleet", FLEET, "--url", "mqtts://x:8884", "--no-cert"
        )
    ports = {8883: free_port(), 8884: free_port()}
    (tmp_path / "data").mkdir()
    conf = localize_conf(
        (CONF_DIR / "mosquitto.prod.conf").read_text(),
        ports=ports,
        files_dir=root / "broker",
        data_dir=tmp_path / "data",
    )
    (tmp_path / "mosquitto.conf").write_text(conf)
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [require_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log
        )
    try:
        time.sleep(0.5)
        yield CliBroker(root, ports, proc, log_path)
    finally:
        proc.terminate()
        proc.wait(10)


def _acks_flowing(q: queue.Queue[IncomingMessage], topic: str, within: float = 5.0) -> int:
    """How many messages on `topic` arrived in `within` seconds (the feeder sends ~5/s)."""
    return sum(1 for m in collect(q, quiet=within, limit=within) if m.topic == topic)


def _wait_disconnected(mqtt_link: MqttLink, timeout: float) -> float:
    started = time.monotonic()
    while mqtt_link.connected:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still connected after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


class AckFeeder:
    """The aggregator side: publishes an 'ack' to each device every 0.2 s."""

    def __init__(self, server: MqttLink, devices: list[str]) -> None:
        self.server, self.devices = server, devices

    def tick(self) -> None:
        for name in self.devices:
            self.server.publish(topics.ack_topic(FLEET, name), b"ack", qos=1)


def test_live_revocation_disconnects_and_locks_out_password_and_certificate_devices(
    tmp_path: Path,
) -> None:
    with cli_broker(tmp_path, cert_devices=["dev-cert"], password_devices=["dev-pw"]) as broker:
        pw_ack = topics.ack_topic(FLEET, "dev-pw")
        cert_ack = topics.ack_topic(FLEET, "dev-cert")
        pw_cfg = broker.password_config("dev-pw", broker.device_password("dev-pw"))
        with (
            link(broker.server_config()) as server,
            link(pw_cfg, pw_ack) as pw_dev,
            link(broker.cert_config("dev-cert"), cert_ack) as cert_dev,
        ):
            feeder = AckFeeder(server, ["dev-pw", "dev-cert"])
            for _ in range(5):
                feeder.tick()
                time.sleep(0.2)
            assert _acks_flowing(pw_dev.incoming(), pw_ack, 1.0) >= 3
            assert _acks_flowing(cert_dev.incoming(), cert_ack, 1.0) >= 3

            # --- password identity: revoked live, no restart, no SIGHUP
            started = time.monotonic()
            assert (
                broker.cli("revoke-device", "dev-pw", "--live", "--broker", broker.url(8883)) == 0
            )
            pw_gone = _wait_disconnected(pw_dev, 5.0)
            cli_and_kick = time.monotonic() - started
            for _ in range(10):  # 2 s of acks, while the link keeps retrying to log in
                feeder.tick()
                time.sleep(0.2)
            assert pw_dev.connect_count == 1, "a revoked password identity logged in again"
            assert "Not authorized" in str(pw_dev.last_error) or "Bad user name" in str(
                pw_dev.last_error
            ), pw_dev.last_error
            assert _acks_flowing(pw_dev.incoming(), pw_ack, 0.5) == 0

            # --- certificate identity: kicked live; the TLS listener still admits the
            # certificate until the CRL is reloaded, but it comes back with no rights at all
            assert (
                broker.cli("revoke-device", "dev-cert", "--live", "--broker", broker.url(8883)) == 0
            )
            cert_gone = _wait_disconnected(cert_dev, 5.0)
            before = _acks_flowing(cert_dev.incoming(), cert_ack, 0.3)  # fed while dev-pw went
            assert before >= 5
            assert cert_dev.wait_connected(5.0), (
                "the certificate identity reconnects (CRL not reloaded)"
            )
            for _ in range(10):
                feeder.tick()
                time.sleep(0.2)
            assert _acks_flowing(cert_dev.incoming(), cert_ack, 0.5) == 0
            with pytest.raises(PublishRefused):  # v5 PUBACK 0x87: no write rights left
                cert_dev.publish(topics.update_topic(FLEET, "dev-cert"), b"u").wait(5)

        # the broker re-reads the CRL that revoke-device wrote on SIGHUP: the certificate
        # is then refused at the TLS handshake
        os.kill(broker.proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        with link(broker.cert_config("dev-cert"), connect=False) as again:
            time.sleep(2.0)
            assert again.connect_count == 0, "a revoked certificate connected after SIGHUP"
            assert "failed" in str(again.last_error), again.last_error
    print(
        f"\nlive revoke: `revoke-device --live` took {cli_and_kick:.2f} s; the password device "
        f"was disconnected {pw_gone:.2f} s after it returned, the certificate device "
        f"{cert_gone:.2f} s"
    )


def test_live_enrolment_admits_a_new_device_without_restart(tmp_path: Path) -> None:
    with cli_broker(tmp_path, cert_devices=[], password_devices=["dev-old"]) as broker:
        url = "mqtts://x:8884"
        assert (
            broker.cli(
                "enrol-device",
                "dev-new",
                "--fleet",
                FLEET,
                "--url",
                url,
                "--no-cert",
                "--live",
                "--broker",
                broker.url(8883),
            )
            == 0
        )
        assert (
            broker.cli(
                "enrol-device",
                "dev-newcert",
                "--fleet",
                FLEET,
                "--url",
                "mqtts://x:8883",
                "--live",
                "--broker",
                broker.url(8883),
            )
            == 0
        )
        new_ack = topics.ack_topic(FLEET, "dev-new")
        update = topics.update_topic(FLEET, "dev-new")
        cfg = broker.password_config("dev-new", broker.device_password("dev-new"))
        with (
            link(broker.server_config(), topics.update_subscription(FLEET)) as server,
            link(cfg, new_ack) as dev,
            link(broker.cert_config("dev-newcert")) as certdev,
        ):
            assert dev.publish(update, b"hello").wait(5)
            assert certdev.publish(topics.update_topic(FLEET, "dev-newcert"), b"x").wait(5)
            got = {m.topic for m in collect(server.incoming(), quiet=1.0)}
            assert got == {update, topics.update_topic(FLEET, "dev-newcert")}
            server.publish(new_ack, b"ack").wait(5)
            assert [m.topic for m in collect(dev.incoming(), quiet=1.0)] == [new_ack]
            with pytest.raises(PublishRefused):  # its own topics only, as in the file
                dev.publish(topics.update_topic(FLEET, "dev-old"), b"x").wait(5)


def test_live_change_reports_a_broker_that_refuses_it(tmp_path: Path) -> None:
    """A wrong admin secret: the command fails clearly and says the files were still written."""
    with cli_broker(tmp_path, cert_devices=[], password_devices=["dev-pw"]) as broker:
        admin = broker.root / "admins" / "fleet-admin"
        (admin / "password").write_text("wrong\n")
        with pytest.raises(FleetlearnError) as refused:
            broker.cli(
                "revoke-device",
                "dev-pw",
                "--live",
                "--broker",
                broker.url(8884),
                "--admin-login",
                "password",
            )
        message = str(refused.value)
        assert "fleet-admin" in message and "refused" in message, message
        assert "dynamic-security.json" in message, message  # the files were updated anyway
        assert "dev-pw" not in (broker.root / "broker" / "dynamic-security.json").read_text()
