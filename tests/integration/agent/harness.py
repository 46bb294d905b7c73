"""A real agent process against a real broker, with a tiny test-side server that offers and acks."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.errors import Reason
from protocol.messages import (
    Ack,
    ClientUpdate,
    DeviceStatus,
    ModelOffer,
    decode_status,
    encode_ack,
    encode_offer,
    encode_vector,
)
from protocol.signing import generate_keypair, public_key_to_pem, sign_offer
from protocol.topics import ack_topic, global_model_topic, status_topic, update_topic
from protocol.update_header import decode_any_update
from transport import BrokerConfig, MqttLink

ROOT = Path(__file__).resolve().parents[3]
DEVICE = "dev-1"
FLEET = "itest"


def write_agent_files(
    tmp: Path,
    broker: int | dict[str, str],
    artifacts: Path,
    x: np.ndarray,
    y: np.ndarray,
    **training: object,
) -> tuple[Path, Ed25519PrivateKey]:
    """Config, fleet key, data folder and empty fake sysfs (a mains-powered box).
    `broker`: a plain port on 127.0.0.1, or the [broker] table's keys (TLS, credentials)."""
    broker_table = (
        {"url": f"mqtt://127.0.0.1:{broker}"} if isinstance(broker, int) else dict(broker)
    )
    key, pub = generate_keypair()
    (tmp / "fleet.pub").write_bytes(public_key_to_pem(pub))
    (tmp / "data").mkdir()
    np.savez(tmp / "data" / "train.npz", x=x, y=y)
    for d in ("power", "thermal"):
        (tmp / d).mkdir()
    from agent.artifacts import load_artifacts

    model_id = load_artifacts(artifacts).manifest.model_id
    settings = {
        "steps": 20,
        "batch_size": 32,
        "codec": "int8",
        "check_interval_s": 0.05,
        "ack_timeout_s": 3.0,
        "min_retrain_interval_s": 3600,
    } | training
    lines = [
        f'device_id = "{DEVICE}"',
        f'fleet = "{FLEET}"',
        f'model_id = "{model_id}"',
        'data_dir = "data"',
        f'artifacts_dir = "{artifacts}"',
        'state_dir = "state"',
        'fleet_public_key = "fleet.pub"',
        "[broker]",
        *(f'{k} = "{v}"' for k, v in broker_table.items()),
        "keepalive = 5",
        "[policy]",
        "max_cpu_percent = 100",
        "cpu_margin = 0",  # a loaded CI machine must not hold the round back
        "max_temperature_c = 150",
        "[conditions]",
        'power_supply_dir = "power"',
        'thermal_dir = "thermal"',
        "[training]",
        *(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()),
    ]
    config = tmp / "agent.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, key


def start_agent(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "fleetlearn", "agent", "--config", str(config), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


class TestServer:
    """Publishes signed retained offers, collects updates, acks when told to."""

    __test__ = False  # not a pytest class

    def __init__(self, broker: int | BrokerConfig, model_id: str, key: Ed25519PrivateKey) -> None:
        self.model_id, self.key = model_id, key
        if isinstance(broker, int):
            broker = BrokerConfig(
                url=f"mqtt://127.0.0.1:{broker}",
                client_id="test-server",
                backoff_initial=0.2,
                backoff_max=1.0,
            )
        self.link = MqttLink(broker)
        self.link.subscribe(update_topic(FLEET, DEVICE), qos=1)
        self.link.subscribe(status_topic(FLEET, DEVICE), qos=1)
        self.statuses: list[DeviceStatus] = []
        self.updates: list[tuple[bytes, ClientUpdate]] = []
        self.link.start()
        assert self.link.wait_connected(10), "test server could not reach the broker"

    def offer(self, version: int, weights: np.ndarray, digest: str) -> None:
        offer = ModelOffer(
            self.model_id, version, digest, encode_vector(weights, {"name": "float32"}), time.time()
        )
        payload = encode_offer(sign_offer(offer, self.key))
        self.link.publish(global_model_topic(FLEET, self.model_id), payload, 1, True).wait(10)

    def _pump(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Sort incoming messages into `updates` / `statuses` until `done()` or the timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout} s")
            try:
                msg = self.link.incoming().get(timeout=left)
            except queue.Empty:
                continue
            if msg.topic == status_topic(FLEET, DEVICE):
                self.statuses.append(decode_status(msg.payload))
            elif msg.topic == update_topic(FLEET, DEVICE):
                self.updates.append((msg.payload, decode_any_update(msg.payload)))

    def forget(self, settle: float = 0.5) -> None:
        """Drop everything received so far (after `settle` s for in-flight messages)."""
        time.sleep(settle)
        self._pump(lambda: self.link.incoming().empty(), 1.0, "quiet")
        self.updates.clear()
        self.statuses.clear()

    def next_update(self, timeout: float) -> tuple[bytes, ClientUpdate]:
        self._pump(lambda: bool(self.updates), timeout, "update")
        return self.updates.pop(0)

    def wait_status(self, online: bool, timeout: float) -> DeviceStatus:
        """The first status with this `online` flag (the last will says offline)."""
        self._pump(lambda: any(st.online == online for st in self.statuses), timeout, "status")
        found = next(st for st in self.statuses if st.online == online)
        self.statuses.clear()
        return found

    def ack(self, seq: int, accepted: bool = True, reason: Reason = Reason.OK) -> None:
        payload = encode_ack(Ack(DEVICE, seq, accepted, reason, 1))
        self.link.publish(ack_topic(FLEET, DEVICE), payload, 1, False).wait(10)

    def close(self) -> None:
        self.link.stop()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    """Stop by PID (SIGTERM, then SIGKILL) and return its output."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    out, _ = proc.communicate()
    return out.decode(errors="replace")
