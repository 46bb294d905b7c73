"""The flood row of benchmarks/robustness.py: one enrolled device floods its own topics, live.

Real Mosquitto with the production config (TLS, client certificates, dynamic security; made by
tests/support/mosquitto.py on 127.0.0.1), the real `ServerApp` (FedAsync alpha 0.5, so every
accepted update is one version and the restart check is exact; the default robust defence; the
default rate limit of 120 updates per device per minute), a 9,610-parameter model (the digits
MLP's size). Honest devices (`HONEST`, each on its own MQTT connection) take turns: one real
schema-2 float32 update every ~100 ms in all, each device waiting for its Ack before its next
turn, as an agent does; the Ack time is publish -> Ack received.

    baseline  the honest devices alone for `seconds`
    flood     the same while a separate process (one raw paho client, the device "evil")
              publishes 7-byte garbage at QoS 0, two thirds on its update topic and one third on
              its status topic, paced to `rate` messages/s for `seconds`

The flood's window lasts until the server has read all of it (`server_drained_s` after the
flood began), so updates delayed by the backlog count. Then the server is stopped and started
again on the same state: every update it acknowledged as accepted must be applied
(`acked_updates_lost` counts those beyond a device's applied sequence number).
`os.getloadavg()` is recorded at the start and end of each measurement.

Child process: `python -m benchmarks.robustness_flood PORT CA CERT KEY DEVICE UPDATE STATUS RATE
SECONDS` prints "ready" once connected, then one JSON line {"sent", "update_topic", "seconds"}
(started by `flood_rows`, stopped by its pid).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLEET = "bench"
EVIL = "evil"
HONEST = [f"dev-{i}" for i in range(8)]  # 8 turns of 100 ms: each device 75 updates/minute
TURN_S = 0.1  # one honest update per turn, across the devices
NUM_PARAMS = 9610  # the digits MLP's size
ACK_TIMEOUT_S = 30.0
GOAL_ACK_P99_S = 1.0
GARBAGE = b"\x00garbag"


@dataclass
class _Honest:
    """One honest device's link and what it saw."""

    name: str
    index: int
    link: Any  # transport.MqttLink
    seq: int = 0
    base: int = 0
    latencies: list[float] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)  # sequence numbers Acked as accepted
    refused: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _send_one(h: _Honest, uplink: Any, rng: np.random.Generator) -> None:
    """Publish one update and wait for its Ack (accepted or not)."""
    from protocol.messages import decode_ack
    from protocol.topics import update_topic

    h.seq += 1
    delta = (rng.standard_normal(NUM_PARAMS) * (0.05 / np.sqrt(NUM_PARAMS))).astype(np.float32)
    payload, _ = uplink.encode(h.index, h.name, h.seq, h.base, 32, 4, delta)
    acks = h.link.incoming()
    sent = time.monotonic()
    h.link.publish(update_topic(FLEET, h.name), payload, qos=1)
    deadline = sent + ACK_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            ack = decode_ack(acks.get(timeout=left).payload)
        except queue.Empty:
            break
        if ack.seq != h.seq:
            continue  # a late Ack of an update that timed out
        h.latencies.append(time.monotonic() - sent)
        if ack.accepted:
            h.acked.append(h.seq)
            h.base = ack.server_version
        else:
            h.refused[ack.reason.value] += 1
        return
    h.timeouts += 1


def _honest_turns(
    devices: list[_Honest], uplink: Any, stop: threading.Event, started: float
) -> list[threading.Thread]:
    """One thread per device; device i's turns are at started + i*TURN_S + k*len*TURN_S."""
    period = TURN_S * len(devices)

    def loop(h: _Honest) -> None:
        rng = np.random.default_rng([7, h.index])
        next_at = started + h.index * TURN_S
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            _send_one(h, uplink, rng)
            next_at = max(next_at + period, time.monotonic())  # after a late Ack: at once

    threads = [threading.Thread(target=loop, args=(h,), daemon=True) for h in devices]
    for t in threads:
        t.start()
    return threads


def _measure(
    devices: list[_Honest], uplink: Any, app: Any, done: Callable[[float], bool]
) -> dict[str, Any]:
    """Honest turns until `done(seconds since start)`; the Ack times of that window."""
    for h in devices:
        h.latencies.clear()
        h.timeouts = 0
        h.refused.clear()
    acked_before = sum(len(h.acked) for h in devices)
    load_start = os.getloadavg()
    stop = threading.Event()
    started = time.monotonic()
    threads = _honest_turns(devices, uplink, stop, started)
    while not done(time.monotonic() - started):
        time.sleep(0.05)
    window = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join(ACK_TIMEOUT_S + 5)
    latencies = [x for h in devices for x in h.latencies]
    refused: Counter[str] = Counter()
    for h in devices:
        refused.update(h.refused)
    return {
        "honest_devices": len(devices),
        "honest_updates": len(latencies) + sum(h.timeouts for h in devices),
        "honest_acked_accepted": sum(len(h.acked) for h in devices) - acked_before,
        "honest_refused": dict(refused),
        "honest_ack_timeouts": sum(h.timeouts for h in devices),
        "honest_ack_p50_s": _percentile(latencies, 50),
        "honest_ack_p99_s": _percentile(latencies, 99),
        "honest_ack_max_s": max(latencies, default=None),
        "window_s": round(window, 2),
        "server_error": None if app.error is None else repr(app.error),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }


class _Flood:
    """The flooding process (started and stopped by its pid) and the server's view of it."""

    def __init__(self, broker: Any, app: Any, rate: float, seconds: float) -> None:
        from protocol.topics import status_topic, update_topic

        cfg = broker.client_config(EVIL)
        args = [broker.tls_port, cfg.ca_file, cfg.cert_file, cfg.key_file, EVIL,
                update_topic(FLEET, EVIL), status_topic(FLEET, EVIL), rate, seconds]  # fmt: skip
        self.app = app
        self.refused_before = _refused(app)
        self.report: dict[str, Any] | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.robustness_flood", *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":  # connected: the flood starts now
            raise RuntimeError("the flooding process did not connect")
        self.started = time.monotonic()
        self.ended = 0.0  # when the flooding process exited
        self.drained_s: float | None = None

    def refused(self) -> int:
        """Garbage updates the server has read and refused since the flood began."""
        return _refused(self.app) - self.refused_before

    def done(self, _elapsed: float) -> bool:
        """The flood has ended and the server has read all of it (or 60 s more have passed)."""
        if self.report is None:
            if self.proc.poll() is None:
                return False
            out, _ = self.proc.communicate(timeout=10)
            self.report = json.loads(out.strip().splitlines()[-1])
            self.ended = time.monotonic()
        if self.refused() >= self.report["update_topic"] or time.monotonic() > self.ended + 60:
            self.drained_s = time.monotonic() - self.started
            return True
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by its pid: the process this benchmark started
            self.proc.wait()


def _refused(app: Any) -> int:
    counts = app.status().counts
    return int(counts.get("rate_limited", 0) + counts.get("malformed", 0))


def flood_rows(rate: float = 10_000.0, seconds: float = 10.0) -> list[dict[str, Any]]:
    """[baseline row, flood row] (module docstring)."""
    from fleet.sim.uplink import Uplink
    from protocol.topics import ack_topic
    from server.app import ServerApp
    from server.config import parse_config
    from tests.support.mosquitto import running_mosquitto
    from tests.unit.server.factory import make_artifacts, write_key
    from transport import MqttLink

    tmp = Path(tempfile.mkdtemp(prefix="robustness-flood-"))
    manifest = make_artifacts(tmp / "artifacts", NUM_PARAMS)
    key, _ = write_key(tmp)
    config = parse_config(
        {"fleet": FLEET, "artifacts": "artifacts", "signing_key": str(key),
         "state_dir": "state", "strategy": {"name": "fedasync", "alpha": 0.5}},
        tmp,
    )  # fmt: skip
    uplink = Uplink(manifest, {"name": "float32"})
    rows: list[dict[str, Any]] = []
    with running_mosquitto(tmp / "mq", "prod", fleet=FLEET, devices=[EVIL, *HONEST]) as broker:
        app = ServerApp(config, link=MqttLink(broker.server_config()))
        devices = [
            _Honest(name, i, MqttLink(broker.client_config(name))) for i, name in enumerate(HONEST)
        ]
        flood: _Flood | None = None
        app.start()
        try:
            for h in devices:
                h.link.start()
            for h in devices:
                if not h.link.wait_connected(10):
                    raise RuntimeError(f"{h.name} did not connect")
                h.link.subscribe(ack_topic(FLEET, h.name), 1)
            time.sleep(0.5)  # the SUBSCRIBEs are in before the first Ack
            baseline = _measure(devices, uplink, app, lambda elapsed: elapsed >= seconds)
            rows.append({"attack": "flood_baseline"} | baseline)
            flood = _Flood(broker, app, rate, seconds)
            row = {"attack": "flood"} | _measure(devices, uplink, app, flood.done)
            report = flood.report or {}
            last = len(devices[0].acked)
            _send_one(devices[0], uplink, np.random.default_rng(99))  # after the flood
            row |= {
                "flood_messages": report["sent"],
                "flood_update_messages": report["update_topic"],
                "flood_rate_target_per_s": rate,
                "flood_rate_per_s": round(report["sent"] / report["seconds"], 1),
                "flood_seconds": round(report["seconds"], 2),
                "flood_updates_refused_by_server": flood.refused(),
                "server_drained_s": flood.drained_s,
                "server_alive": app.error is None and len(devices[0].acked) == last + 1,
                "publish_failures": app.metrics.publish_failures(),
            }
            rows.append(row)
        finally:
            if flood is not None:
                flood.stop()
            for h in devices:
                h.link.stop()
            app.stop()
        # a restart on the same state and broker: what survived is what the log replays
        with ServerApp(config, link=MqttLink(broker.server_config())) as again:
            applied = {d: seq for d, (seq, _digest) in again.core.sequences.items()}
            version = again.status().version
    lost = sum(1 for h in devices for seq in h.acked if seq > applied.get(h.name, 0))
    acked = sum(len(h.acked) for h in devices)
    for r in rows:
        r |= {"goal_ack_p99_s": GOAL_ACK_P99_S}
        r["meets_goal"] = r["honest_ack_p99_s"] is not None and (
            r["honest_ack_p99_s"] <= GOAL_ACK_P99_S
        )
    rows[-1] |= {"acked_updates_lost": lost, "acked_total": acked,
                 "version_after_restart": version}  # fmt: skip
    return rows


def _flood_child(argv: list[str]) -> None:
    """The flooding device: one raw paho client, QoS 0, paced to RATE messages/s."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    port, ca, cert, key, device, updates, statuses, rate_s, seconds_s = argv
    rate, seconds = float(rate_s), float(seconds_s)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv311)
    client.tls_set(ca, cert, key)
    client.connect("127.0.0.1", int(port))
    while not client.is_connected():
        client.loop(0.05)
    print("ready", flush=True)
    started = time.monotonic()
    sent = on_updates = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            to_status = sent % 3 == 2
            client.publish(statuses if to_status else updates, GARBAGE, qos=0)
            on_updates += not to_status
            sent += 1
            if sent % 64 == 0:
                client.loop(0)  # paho writes what it queued; nothing is read but PINGRESP
        client.loop(0.0005)
    while client.want_write():
        client.loop(0.01)
    took = time.monotonic() - started
    client.disconnect()
    print(json.dumps({"sent": sent, "update_topic": on_updates, "seconds": took}), flush=True)


if __name__ == "__main__":
    _flood_child(sys.argv[1:])
