"""Server ingest benchmark: decode + admit + aggregate, side by side with the floor, one run.

Run from the repo root:  python benchmarks/server.py [--updates N] [--out PATH]

For 100k and 1M parameter models and int8 / top-k(1%)+int8 updates: updates per second through
the server's real path (`Admission.admit`: size, msgpack decode, schema and field checks, device,
model, sequence, samples, staleness, codec decode, finiteness, L2 norm bound; then FedBuff K=10
with polynomial staleness) versus the floor of touching the same bytes once (a numpy copy of a
buffer as large as the update payload). `fraction_of_floor` = ours / floor.

Durability cost (100k, int8): the same path through ServerCore with the on-disk update log,
fsync per update vs one fsync per batch of 32 (group commit), vs no log at all.
Writes benchmarks/results/server.json.
"""

from __future__ import annotations

import argparse
import json
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

from protocol.codecs import parse_codec_arg  # noqa: E402
from protocol.manifest import Manifest, ParamSpec  # noqa: E402
from protocol.messages import ClientUpdate, encode_update, encode_vector  # noqa: E402
from server.admission import Admission, AdmissionLimits  # noqa: E402
from server.core import ServerCore  # noqa: E402
from server.staleness import make_staleness  # noqa: E402
from server.strategies import FedBuff  # noqa: E402

SIZES = {"100k": 100_000, "1M": 1_000_000}
CODECS = {"int8": "int8:256", "topk0.01+int8": "topk:0.01+int8:256"}
DEVICES = 64
BATCH = 32


def manifest(n: int) -> Manifest:
    return Manifest("bench", (ParamSpec("w", (n - 1000,)), ParamSpec("b", (1000,))), "x", (10,), 10)


def payloads(m: Manifest, codec: str, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """`count` distinct realistic updates: device i % DEVICES, increasing seq, base version 0."""
    rng = np.random.default_rng(seed)
    spec = parse_codec_arg(codec)
    out = []
    for i in range(count):
        delta = (rng.standard_t(3, m.num_params) * 1e-3).astype(np.float32)  # (n,) heavy-tailed
        device = f"dev-{i % DEVICES:03d}"
        msg = ClientUpdate(
            m.model_id,
            0,
            device,
            i // DEVICES + 1,
            32,
            10,
            encode_vector(delta, spec),
            {"loss": 0.5},
        )
        out.append((device, encode_update(msg)))
    return out


def strategy() -> FedBuff:
    return FedBuff(buffer_size=10, staleness=make_staleness("polynomial", {"a": 0.5}))


def limits() -> AdmissionLimits:
    return AdmissionLimits(max_norm=10.0, max_staleness=None)


def ingest(m: Manifest, items: list[tuple[str, bytes]]) -> float:
    """Updates/s through admission + aggregation, no durability (state kept like the core does)."""
    admission, strat = Admission(m, limits()), strategy()
    model, version = np.zeros(m.num_params, np.float32), 0
    seqs: dict[str, tuple[int, str]] = {}
    start = time.perf_counter()
    for device, payload in items:
        a = admission.admit(device, payload, version=version, sequences=seqs, strategy=strat)
        result = strat.apply(model, version, a.update)
        model, version = result.model, result.version
        seqs[device] = (a.update.seq, a.digest)
    return len(items) / (time.perf_counter() - start)


def floor(items: list[tuple[str, bytes]]) -> float:
    """Updates/s of reading each payload's bytes once: a numpy copy of an equally sized buffer."""
    buffers = [np.frombuffer(p, np.uint8) for _, p in items]
    start = time.perf_counter()
    sink = 0
    for b in buffers:
        sink += int(b.copy()[-1])
    elapsed = time.perf_counter() - start
    del sink
    return len(items) / elapsed


def durable(m: Manifest, items: list[tuple[str, bytes]], batch: int | None) -> float:
    """Updates/s through ServerCore with its log: fsync per update (batch None) or per batch."""
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        core = ServerCore(
            m,
            np.zeros(m.num_params, np.float32),
            strategy(),
            Path(tmp),
            limits(),
            checkpoint_every=10**9,
        )
        core.recover()
        start = time.perf_counter()
        if batch is None:
            for device, payload in items:
                assert core.handle(device, payload).ack.accepted
        else:
            for i in range(0, len(items), batch):
                outs = [core.submit(d, p) for d, p in items[i : i + batch]]
                core.commit()
                assert all(o.ack.accepted for o in outs)
        rate = len(items) / (time.perf_counter() - start)
        core.close()
    return rate


def best(fn: Any, *args: Any, repeats: int = 3) -> float:
    return float(max(fn(*args) for _ in range(repeats)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100, help="updates per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/server.json")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    rows = []
    for size_name, n in SIZES.items():
        m = manifest(n)
        count = args.updates if n <= 100_000 else max(20, args.updates // 4)
        for codec_name, codec in CODECS.items():
            items = payloads(m, codec, count)
            ours, base = best(ingest, m, items), best(floor, items)
            payload_bytes = int(np.mean([len(p) for _, p in items]))
            entry = {
                "params": n,
                "codec": codec,
                "payload_bytes": payload_bytes,
                "updates": count,
                "updates_per_s": round(ours, 1),
                "floor_updates_per_s": round(base, 1),
                "fraction_of_floor": round(ours / base, 5),
            }
            results.setdefault(size_name, {})[codec_name] = entry
            rows.append((size_name, codec_name, payload_bytes, ours, base, ours / base))

    m = manifest(SIZES["100k"])
    items = payloads(m, CODECS["int8"], args.updates, seed=1)
    dur = {
        "params": m.num_params,
        "codec": CODECS["int8"],
        "updates": len(items),
        "no_log_updates_per_s": round(best(ingest, m, items), 1),
        "fsync_per_update_updates_per_s": round(best(durable, m, items, None), 1),
        f"fsync_per_{BATCH}_updates_per_s": round(best(durable, m, items, BATCH), 1),
    }

    print(f"{'model':>6} {'codec':>14} {'bytes':>9} {'updates/s':>10} {'floor/s':>11} {'ratio':>8}")
    for size_name, codec_name, nbytes, ours, base, ratio in rows:
        print(
            f"{size_name:>6} {codec_name:>14} {nbytes:>9} {ours:>10.1f} {base:>11.1f} {ratio:>8.5f}"
        )
    print(f"\ndurability (100k params, int8, {len(items)} updates):")
    for key, value in dur.items():
        if key.endswith("per_s"):
            print(f"  {key:<36} {value:>10.1f}")

    doc = {
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "strategy": "fedbuff K=10, polynomial a=0.5",
            "admission": "max_norm=10 (clip)",
            "floor": "numpy copy of a buffer the size of the update payload",
            "timing": "best of 3",
        },
        "ingest": results,
        "durability": dur,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
