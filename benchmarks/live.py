"""Live ingest through a real Mosquitto: publisher processes, then a fleet of live agents.

Run from the repo root:  python benchmarks/live.py [--agents 1000] [--out PATH]

Everything is real except the trainer: Mosquitto runs the committed broker-config/mosquitto.dev.conf
(its port rewritten to a free one on 127.0.0.1), the server is `ServerApp` (FedBuff K=10, group
commit with fsync, update log and checkpoints on disk) in this process, and the clients publish
schema 2 messages through MQTT QoS 1 and wait for the server's Acks.

1. ingest   `--procs` processes x `--conns` MQTT connections, each connection keeping `--window`
            updates in flight (publish, wait for the Ack, publish the next with the acked server
            version as its base): 1M-parameter int8 and top-1% + int8 updates. Reports end-to-end
            updates/s, Ack latency (publish call -> Ack received) p50 / p99, and the CPU each
            component used (broker, server process, publishers) over the wall time: on a machine
            whose cores are all busy, the component with the largest share is the bottleneck.
            Each connection publishes for many devices (one update each), as a gateway would.
            Run once per `--defences` entry: the server's default robust defence, and aggregator
            mean (norm bound and one per device kept; the fused codec-form path).
2. fleet    `--agents` real `AgentRuntime`s (FakeTrainer on a 9,610-parameter model, codec
            topk:0.02+int8, on-disk outbox) in `--agent-procs` processes, each on its own MQTT
            connection. The server publishes a new model every `--offer-every` s; every agent
            trains on each new version and sends its update. After `--seconds`, agents stop
            training (unplugged) and drain: every update sent must be acked; `lost` = updates
            still unacknowledged after the drain, `duplicated` = updates the server applied more
            than once (its accepted count minus the distinct acked updates). Memory per agent =
            (process RSS at the end - the same process's RSS before it made its agents, after
            the imports) / agents; `rss_mb_per_agent_connected` is the same just after connect.

Writes benchmarks/results/live.json (`agents`, `updates_per_s`, `ack_p50_ms`, `ack_p99_ms`,
`lost`, `duplicated`, `rss_mb_per_agent` from the fleet run; the ingest runs under `ingest`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the repo's packages; don't let benchmarks/ shadow stdlib

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks.live_workers import FLEET, agent_group, publisher  # noqa: E402

# --- the server and the broker ----------------------------------------------------------------


# The server's robust defence for the ingest runs: "default" is what a server without a
# [strategy.robust] table runs (cosine against the buffer's coordinate-wise median: every update
# expanded to a dense row); "mean" keeps the norm bound and one update per device but aggregates
# by the mean, so updates stay in codec form (the fused path).
DEFENCES: dict[str, dict[str, Any] | None] = {"default": None, "mean": {"aggregator": "mean"}}


def server_app(
    tmp: Path, n: int, publish_every_s: float, robust: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    from server.config import parse_config
    from tests.unit.server.factory import make_artifacts, write_key

    manifest = make_artifacts(tmp / "artifacts", n)
    key, _public = write_key(tmp)
    config = parse_config(
        {
            "fleet": FLEET,
            "artifacts": "artifacts",
            "signing_key": str(key),
            "state_dir": "state",
            "strategy": {"name": "fedbuff", "buffer_size": 10,
                         **({"robust": robust} if robust is not None else {})},
            "admission": {"max_norm": 10.0, "max_staleness": -1},
            "publish": {"every_versions": 1_000_000, "every_seconds": publish_every_s,
                        "codec": "float16"},
            # durability: the defaults (group commit of 64; checkpoints every 200 records once
            # the log holds 4x the checkpoint's bytes)
        },
        tmp,
    )  # fmt: skip
    return config, manifest


def _percentiles(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    a = np.asarray(lat) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def run_ingest(
    broker: Any,
    tmp: Path,
    codec: str,
    n: int,
    procs: int,
    conns: int,
    updates: int,
    window: int,
    defence: str,
) -> dict[str, Any]:
    from server.app import ServerApp
    from transport import BrokerConfig, MqttLink

    config, manifest = server_app(tmp, n, 3600.0, DEFENCES[defence])
    app = ServerApp(config, link=MqttLink(BrokerConfig(url=broker.url(), client_id="fl-server")))
    app.start()
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    workers = [
        ctx.Process(
            target=publisher,
            args=(i, conns, updates, window, codec, n, manifest.model_id, broker.url(), out, go),
        )
        for i in range(procs)
    ]
    try:
        for w in workers:
            w.start()
        time.sleep(2.0 + 0.2 * procs * conns)  # connect, pre-encode
        me, mq = psutil.Process(), psutil.Process(broker.pid)
        cpu_server, cpu_broker = _cpu(me), _cpu(mq)
        started = time.perf_counter()
        go.set()
        results = [out.get(timeout=900) for _ in workers]
        wall = time.perf_counter() - started
        cpu_server, cpu_broker = _cpu(me) - cpu_server, _cpu(mq) - cpu_broker
        for w in workers:
            w.join(30)
        counts = app.status().counts
    finally:
        app.stop()
    lat = [x for r in results for x in r["latencies"]]
    p50, p99 = _percentiles(lat)
    acked = sum(r["acked"] for r in results)
    cpu = {
        "broker": cpu_broker / wall,
        "server": cpu_server / wall,
        "publishers": sum(r["cpu_s"] for r in results) / wall,
    }
    return {
        "codec": codec,
        "defence": defence,
        "params": n,
        "message_bytes": results[0]["message_bytes"],
        "connections": procs * conns,
        "processes": procs,
        "window": window,
        "sent": sum(r["sent"] for r in results),
        "acked": acked,
        "accepted": counts.get("accepted", 0),
        "rejected": {k: v for k, v in counts.items() if k != "accepted"},
        "duplicate_acks": sum(r["duplicate_acks"] for r in results),
        "updates_per_s": round(acked / wall, 1),
        "ack_p50_ms": round(p50, 1),
        "ack_p99_ms": round(p99, 1),
        "cpu_cores_used": {k: round(v, 2) for k, v in cpu.items()},
        "bottleneck": max(cpu, key=lambda k: cpu[k]),
        "wall_s": round(wall, 2),
    }


def run_fleet(
    broker: Any, tmp: Path, agents: int, procs: int, seconds: float, offer_every: float
) -> dict[str, Any]:
    from server.app import ServerApp
    from transport import BrokerConfig, MqttLink

    config, _ = server_app(tmp, 9610, publish_every_s=offer_every)
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    private = load_pem_private_key(config.signing_key.read_bytes(), None)
    pub = tmp / "fleet.pub"
    pub.write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    app = ServerApp(config, link=MqttLink(BrokerConfig(url=broker.url(), client_id="fl-server")))
    app.start()
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    per = [agents // procs + (i < agents % procs) for i in range(procs)]
    workers = [
        ctx.Process(
            target=agent_group,
            args=(
                i,
                per[i],
                broker.url(),
                str(tmp / "artifacts"),
                str(pub),
                str(tmp / "agents"),
                seconds,
                60.0,
                out,
                go,
            ),
        )
        for i in range(procs)
    ]
    try:
        for w in workers:
            w.start()
        ready = [out.get(timeout=600) for _ in workers]
        connected = sum(r["connected"] for r in ready)
        me = psutil.Process()
        cpu_server = _cpu(me)
        accepted0 = app.status().counts.get("accepted", 0)
        started = time.perf_counter()
        go.set()
        results = [out.get(timeout=seconds + 600) for _ in workers]
        wall = time.perf_counter() - started
        cpu_server = _cpu(me) - cpu_server
        for w in workers:
            w.join(60)
        time.sleep(1.0)
        status = app.status()
    finally:
        app.stop()
    accepted = status.counts.get("accepted", 0) - accepted0
    acked = sum(r["acked"] for r in results)
    lat = [x for r in results for x in r["latencies"]]
    p50, p99 = _percentiles(lat)
    rss_connected = sum(r["rss_connected_mb"] - r["rss_before_mb"] for r in results)
    rss_end = sum(r["rss_end_mb"] - r["rss_before_mb"] for r in results)
    return {
        "agents": agents,
        "connected": connected,
        "processes": procs,
        "seconds_training": seconds,
        "offer_every_s": offer_every,
        "sent": sum(r["sent"] for r in results),
        "acked": acked,
        "accepted_by_server": accepted,
        "rejected": {k: v for k, v in status.counts.items() if k != "accepted"},
        "lost": sum(r["pending"] for r in results),
        "duplicated": max(0, accepted - acked),
        "updates_per_s": round(accepted / wall, 1),
        "ack_p50_ms": round(p50, 1),
        "ack_p99_ms": round(p99, 1),
        "rss_mb_per_agent": round(rss_end / agents, 3),  # after the run: outbox, models, links
        "rss_mb_per_agent_connected": round(rss_connected / agents, 3),  # before any training
        "rss_mb_per_process_end": [round(r["rss_end_mb"], 1) for r in results],
        "server_cpu_cores_used": round(cpu_server / wall, 2),
        "agent_cpu_cores_used": round(sum(r["cpu_s"] for r in results) / wall, 2),
        "server_version": status.version,
        "wall_s": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4, help="publisher processes")
    parser.add_argument("--conns", type=int, default=4, help="MQTT connections per publisher")
    parser.add_argument("--window", type=int, default=8, help="updates in flight per connection")
    parser.add_argument("--int8-updates", type=int, default=24, help="1M int8 updates per conn")
    parser.add_argument("--topk-updates", type=int, default=200, help="top-1% updates per conn")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--agent-procs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0, help="fleet training time")
    parser.add_argument("--offer-every", type=float, default=2.0, help="s between new models")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--defences", default="default,mean", help=f"ingest runs, from {sorted(DEFENCES)}"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/live.json")
    args = parser.parse_args()

    from tests.support.mosquitto import running_mosquitto

    doc: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp_name:
        tmp = Path(tmp_name)
        ingest = []
        if not args.skip_ingest:
            runs = [
                (codec, updates, defence)
                for defence in args.defences.split(",")
                for codec, updates in (
                    ("int8:256", args.int8_updates),
                    ("topk:0.01+int8:256", args.topk_updates),
                )
            ]
            for i, (codec, updates, defence) in enumerate(runs):
                with running_mosquitto(tmp / f"mq{i}", "dev") as broker:
                    r = run_ingest(
                        broker, tmp / f"ingest{i}", codec, 1_000_724,
                        args.procs, args.conns, updates, args.window, defence,
                    )  # fmt: skip
                ingest.append(r)
                print(json.dumps(r))
        with running_mosquitto(tmp / "mqf", "dev") as broker:
            fleet = run_fleet(
                broker, tmp / "fleet", args.agents, args.agent_procs, args.seconds, args.offer_every
            )
        print(json.dumps(fleet))
    keys = ("agents", "updates_per_s", "ack_p50_ms", "ack_p99_ms", "lost", "duplicated",
            "rss_mb_per_agent")  # fmt: skip
    doc = {k: fleet[k] for k in keys}
    doc["fleet"] = fleet
    doc["ingest"] = ingest
    doc["meta"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "broker": "mosquitto, broker-config/mosquitto.dev.conf (port rewritten)",
        "server": "ServerApp, FedBuff K=10, admission max_norm 10 (clip), pipelined group "
        "commit + fsync; ingest runs with the default robust defence and with aggregator mean",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
