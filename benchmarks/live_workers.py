"""The client processes of benchmarks/live.py (spawned): MQTT publishers and groups of agents.

Kept apart from the driver so that each spawned process imports only what it runs.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

__all__ = ["FLEET", "agent_group", "publisher"]

FLEET = "bench"


# --- publishers (part 1) ----------------------------------------------------------------------


def publisher(
    index: int,
    conns: int,
    updates: int,
    window: int,
    codec: str,
    n: int,
    model_id: str,
    url: str,
    out: Any,
    go: Any,
) -> None:
    """One process: `conns` connections, `updates` each, `window` in flight per connection.

    Each connection is a gateway for many devices: every update comes from a device of its own
    (seq 1), as in a large fleet, so the per-device defences (rate limit, one update per device
    per buffer) see a fleet, not one device flooding. The connection subscribes to that device's
    Ack topic just before publishing (the broker handles a client's packets in order)."""
    from protocol import codecs
    from protocol.messages import ClientUpdate, EncodedVector, decode_ack
    from protocol.topics import ack_topic, update_topic
    from protocol.update_header import encode_update_compact
    from transport import BrokerConfig, MqttLink

    spec = codecs.parse_codec_arg(codec)
    rng = np.random.default_rng(index)
    names = [f"pub-{index:02d}-{j:03d}" for j in range(conns)]
    links = [MqttLink(BrokerConfig(url=url, client_id=name)) for name in names]
    deltas = [
        EncodedVector(
            spec, codecs.encode((rng.standard_t(3, n) * 1e-3).astype(np.float32), spec), n
        )
        for _ in names
    ]
    for link in links:
        link.start()
    assert all(link.wait_connected(30) for link in links)
    time.sleep(0.5)  # SUBACKs before the first Ack can be due
    go.wait()
    sent_at: dict[tuple[int, str], float] = {}
    latencies: list[float] = []
    acked = [0] * conns
    next_seq = [1] * conns
    base = [0] * conns
    dup = rejected = 0
    sizes: list[int] = []
    cpu0 = time.process_time()
    started = time.perf_counter()

    def send(j: int) -> None:
        device = f"{names[j]}-{next_seq[j]:05d}"
        next_seq[j] += 1
        msg = ClientUpdate(model_id, base[j], device, 1, 32, 10, deltas[j], {"loss": 0.5})
        data = encode_update_compact(msg)
        sizes.append(len(data))
        links[j].subscribe(ack_topic(FLEET, device), 1)
        sent_at[(j, device)] = time.perf_counter()
        links[j].publish(update_topic(FLEET, device), data, qos=1)

    for j in range(conns):
        for _ in range(min(window, updates)):
            send(j)
    deadline = time.monotonic() + 600
    while sum(acked) < conns * updates and time.monotonic() < deadline:
        idle = True
        for j, link in enumerate(links):
            try:
                incoming = link.incoming().get_nowait()
            except queue.Empty:
                continue
            idle = False
            ack = decode_ack(incoming.payload)
            t = sent_at.pop((j, ack.device_id), None)
            if t is None:
                dup += 1
                continue
            latencies.append(time.perf_counter() - t)
            rejected += not ack.accepted
            acked[j] += 1
            base[j] = ack.server_version
            if next_seq[j] <= updates:
                send(j)
        if idle:
            time.sleep(0.0005)
    wall = time.perf_counter() - started
    out.put(
        {
            "sent": sum(s - 1 for s in next_seq),
            "message_bytes": int(np.mean(sizes)),
            "acked": sum(acked),
            "duplicate_acks": dup,
            "rejected": rejected,
            "latencies": latencies,
            "wall_s": wall,
            "cpu_s": time.process_time() - cpu0,
        }
    )
    for link in links:
        link.stop()


# --- agents (part 2) ---------------------------------------------------------------------------


def agent_group(
    index: int,
    count: int,
    url: str,
    artifacts: str,
    pubkey: str,
    state_root: str,
    seconds: float,
    drain_s: float,
    out: Any,
    go: Any,
) -> None:
    """One process: `count` AgentRuntimes polled round-robin on this thread."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from agent.conditions import FakeConditions
    from agent.config import parse_config as parse_agent_config
    from agent.runtime import AgentRuntime
    from agent.trainer.fake import FakeTrainer
    from protocol.artifacts import MANIFEST_FILE
    from protocol.manifest import decode_manifest
    from protocol.messages import decode_ack
    from protocol.update_header import decode_any_update
    from transport import BrokerConfig, IncomingMessage, MqttLink

    class _Stamped(queue.Queue[IncomingMessage]):
        """The link's inbox, stamping when each Ack arrives (on the network thread)."""

        def __init__(self, acks: dict[int, float]) -> None:
            super().__init__()
            self.acks = acks

        def put(
            self, item: IncomingMessage, block: bool = True, timeout: float | None = None
        ) -> None:
            if item.topic.endswith("/ack"):
                self.acks.setdefault(decode_ack(item.payload).seq, time.perf_counter())
            super().put(item, block, timeout)

    class TimedLink(MqttLink):
        """MqttLink that records when each update seq was first published and first acked."""

        def __init__(self, config: BrokerConfig) -> None:
            super().__init__(config)
            self.published: dict[int, float] = {}
            self.acks: dict[int, float] = {}
            self._incoming = _Stamped(self.acks)  # benchmark-only: time the Acks as they land

        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
            if topic.endswith("/update"):
                self.published.setdefault(decode_any_update(payload).seq, time.perf_counter())
            return super().publish(topic, payload, qos, retain)

    rss0 = psutil.Process().memory_info().rss
    manifest = decode_manifest((Path(artifacts) / MANIFEST_FILE).read_bytes())
    public = load_pem_public_key(Path(pubkey).read_bytes())
    x = np.zeros((4, manifest.input_shape[0]), np.float32)  # (samples, input)
    y = np.zeros(4, np.int64)
    agents, links, conds = [], [], []
    for j in range(count):
        name = f"agent-{index:02d}-{j:04d}"
        folder = Path(state_root) / name
        folder.mkdir(parents=True)
        doc = {
            "device_id": name,
            "fleet": FLEET,
            "model_id": manifest.model_id,
            "data_dir": "data",
            "artifacts_dir": "artifacts",
            "state_dir": "state",
            "fleet_public_key": "fleet.pub",
            "broker": {"url": url},
            "training": {
                "steps": 2,
                "batch_size": 4,
                "codec": "topk:0.02+int8",
                "check_interval_s": 0.5,
                "ack_timeout_s": 30,
                "min_retrain_interval_s": 3600,
            },
        }
        link = TimedLink(BrokerConfig(url=url, client_id=name, keepalive=120))
        cond = FakeConditions()
        agent = AgentRuntime(
            parse_agent_config(doc, folder),
            manifest,
            link=link,
            trainer=FakeTrainer(manifest, step_delta=1e-3),
            train_x=x,
            train_y=y,
            conditions=cond,
            fleet_key=public,  # type: ignore[arg-type]
        )
        agents.append(agent)
        links.append(link)
        conds.append(cond)
    for link in links:
        link.start()
    connected = sum(link.wait_connected(60) for link in links)
    rss1 = psutil.Process().memory_info().rss
    out.put({"index": index, "connected": connected})
    go.wait()
    for agent in agents:
        agent.start()
    cpu0 = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for agent in agents:
            agent.poll(0)
        time.sleep(0.002)
    for cond in conds:
        cond.set(charging=False, battery_percent=5.0)  # unplugged: no new rounds, drain only
    drain_end = time.monotonic() + drain_s
    while time.monotonic() < drain_end and any(a.store.pending_seqs() for a in agents):
        for agent in agents:
            agent.poll(0)
        time.sleep(0.005)
    latencies = [
        link.acks[s] - t for link in links for s, t in link.published.items() if s in link.acks
    ]
    out.put(
        {
            "index": index,
            "agents": count,
            "connected": connected,
            "sent": sum(len(link.published) for link in links),
            "acked": sum(a.acked for a in agents),
            "pending": sum(len(a.store.pending_seqs()) for a in agents),
            "latencies": latencies,
            "rss_before_mb": rss0 / 2**20,
            "rss_connected_mb": rss1 / 2**20,
            "rss_end_mb": psutil.Process().memory_info().rss / 2**20,
            "cpu_s": time.process_time() - cpu0,
        }
    )
    for agent in agents:
        agent.stop()
    for link in links:
        link.stop()
