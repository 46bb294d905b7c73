"""Server ingest benchmark: ours vs the arithmetic bound vs Flower's aggregation, one run.

Run from the repo root:  python benchmarks/server.py [--updates N] [--out PATH]

For 100k and 1M parameter models and int8 / top-k(1%)+int8 updates, side by side on the same
payloads in the same run (a loaded machine slows every column alike; read the ratios):

  ours     the server's real path: `Admission.admit` (size, msgpack, schema, fields, device,
           model, sequence, samples, staleness, every codec check, L2 norm clip at 10) and FedBuff
           K=10 with polynomial staleness, fed the fused codec-form delta (server/admitted.py)
  bound    the arithmetic alone in numpy: dequantise the codes and add them into a float32
           buffer (np.multiply(codes, scales, out=scratch); np.add(buf, scratch, out=buf)), no
           checks, no decoding of the message (indices pre-decoded for top-k)
  memory   bytes the arithmetic must move (codes + read-modify-write of the touched buffer) over
           the copy bandwidth measured in this run
  flower   Flower's `aggregate()` arithmetic as plain numpy, per float32 update: bytes -> array,
           `layer * num_examples`, `reduce(np.add, ...)`, divide (K=10 per aggregate)
  durable  ServerCore with the update log as the server runs it by default: group commit (one
           fdatasync per batch of 64, `[durability] batch_max`), records written by the log's
           writer thread (server/durability/writer.py), the next batch decoded while the last
           one syncs (pipelined, as server/app.py runs), acks after the fsync; `+ckpt` adds the
           default checkpoints (every 200 records once the log since the last one holds 4x its
           bytes, or 2,000 records: a 1M model's checkpoint is 8+ MB, ~25 ms; when the rule
           waits longer than the run, one checkpoint is timed and its share of the interval
           added);
           `fsync/upd` is fsync per update (batch of one)
  defaults `+ckpt` with everything else as an empty server.toml configures it: the default
           strategy and staleness, the default robust defence (cosine to the buffer's median,
           which keeps every update's dense row), default admission limits, the serving average
  disk     the same bytes written raw the way the log writes them (writeback started per MiB,
           one fdatasync per 64): what this disk takes, the bound for `durable`

`fraction_of_bound` = ours / bound. Writes benchmarks/results/server.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import reduce
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the repo's packages; don't let benchmarks/ shadow stdlib

import numpy as np  # noqa: E402

from protocol import codecs  # noqa: E402
from protocol.codecs import parse_codec_arg  # noqa: E402
from protocol.manifest import Manifest, ParamSpec  # noqa: E402
from protocol.messages import ClientUpdate, encode_vector  # noqa: E402
from protocol.update_header import decode_any_update, encode_update_compact  # noqa: E402
from server.admission import Admission, AdmissionLimits  # noqa: E402
from server.config import DurabilityConfig, ServerConfig  # noqa: E402
from server.core import Commit, Outcome, ServerCore, checkpoint_due  # noqa: E402
from server.durability import CHECKPOINT_NAME  # noqa: E402
from server.robust import RobustConfig  # noqa: E402
from server.serving import ServingAverage  # noqa: E402
from server.staleness import make_staleness  # noqa: E402
from server.strategies import FedBuff, make_strategy  # noqa: E402
from transport import BrokerConfig  # noqa: E402

SIZES = {"100k": 100_000, "1M": 1_000_000}
CODECS = {"int8": "int8:256", "topk0.01+int8": "topk:0.01+int8:256"}
DEVICES = 64
DEFAULTS = DurabilityConfig()  # the server's group commit and checkpoint interval
SERVER = ServerConfig(
    "f", Path(), Path(), Path(), BrokerConfig("mqtt://127.0.0.1", "bench")
)  # an empty server.toml's
DEFAULT_DEFENCE = RobustConfig.from_mapping(SERVER.robust)
BATCH = DEFAULTS.batch_max
GOALS = {("1M", "int8"): 1500.0, ("1M", "topk0.01+int8"): 5000.0}  # durable, issue 17


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
        out.append((device, encode_update_compact(msg)))
    return out


def strategy() -> FedBuff:
    return FedBuff(buffer_size=10, staleness=make_staleness("polynomial", {"a": 0.5}))


def limits() -> AdmissionLimits:
    return AdmissionLimits(max_norm=10.0, max_staleness=None)


def ingest(m: Manifest, items: list[tuple[str, bytes]]) -> float:
    """Updates/s through admission + FedBuff (fused), no durability, state kept as the core does."""
    admission, strat = Admission(m, limits()), strategy()
    model, version = np.zeros(m.num_params, np.float32), 0
    seqs: dict[str, tuple[int, str]] = {}
    start = time.perf_counter()
    for device, payload in items:
        a = admission.admit(device, payload, version=version, sequences=seqs, strategy=strat)
        result = strat.apply_contribution(model, version, a.fused)
        model, version = result.model, result.version
        seqs[device] = (a.fused.seq, a.digest)
    return len(items) / (time.perf_counter() - start)


def _codes(m: Manifest, payload: bytes) -> codecs.DecodedParts:
    msg = decode_any_update(payload)
    return codecs.decode_parts(msg.delta.data, msg.delta.codec, m.num_params)


def bound(m: Manifest, items: list[tuple[str, bytes]]) -> float:
    """Updates/s of the arithmetic alone in numpy: dequantise + add into one float32 buffer."""
    parts = [_codes(m, p) for _, p in items]  # decoded outside the clock
    buf = np.zeros(m.num_params, np.float32)  # (n,)
    scratch = np.empty(m.num_params, np.float32)  # (n,) reused: no allocation in the loop
    start = time.perf_counter()
    for p in parts:
        assert p.codes is not None and p.scales is not None
        k, chunk = p.codes.size, p.chunk
        full = k // chunk
        vals = scratch[:k]
        np.multiply(
            p.codes[: full * chunk].reshape(full, chunk),
            p.scales[:full, None],
            out=vals[: full * chunk].reshape(full, chunk),
        )
        np.multiply(p.codes[full * chunk :], p.scales[full:], out=vals[full * chunk :])
        if p.index is None:
            np.add(buf, vals, out=buf)
        else:
            buf[p.index] += vals
    return len(items) / (time.perf_counter() - start)


def copy_bandwidth() -> float:
    """Bytes/s of a large numpy copy (read + write counted), best of 5."""
    src = np.ones(32 * 1024 * 1024 // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    return 2 * src.nbytes / best


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memory_bound(m: Manifest, items: list[tuple[str, bytes]], bandwidth: float) -> float:
    """Updates/s if the arithmetic moved only the bytes it must, at the measured bandwidth."""
    p = _codes(m, items[0][1])
    assert p.codes is not None and p.scales is not None
    k = p.codes.size
    moved = k + 4 * p.scales.size + 8 * k + (8 * k if p.index is not None else 0)
    return bandwidth / moved


def flower(m: Manifest, k: int = 10, rounds: int = 3) -> float:
    """Updates/s of Flower's aggregate() arithmetic on float32 updates (plain numpy)."""
    rng = np.random.default_rng(5)
    blobs = [(rng.standard_normal(m.num_params).astype(np.float32).tobytes(), 32) for _ in range(k)]
    start = time.perf_counter()
    for _ in range(rounds):
        results = [(np.frombuffer(b, np.float32).copy(), n) for b, n in blobs]  # deserialise
        total = sum(n for _, n in results)
        weighted = [w * n for w, n in results]  # layer * num_examples
        agg = reduce(np.add, weighted) / total
        del agg
    return k * rounds / (time.perf_counter() - start)


def durable(
    m: Manifest,
    items: list[tuple[str, bytes]],
    batch: int | None,
    checkpoints: bool = False,
    server_defaults: bool = False,
) -> float:
    """Updates/s through ServerCore with its log: fsync per update (batch None) or per batch;
    with `checkpoints`, checkpointing as the service loop does (server/app.py); with
    `server_defaults`, also the strategy, defence, admission and serving average an empty
    server.toml gives (server/config.py)."""
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        if server_defaults:
            strat, lim = make_strategy(SERVER.strategy, {}, None, SERVER.robust), AdmissionLimits()
            serving = ServingAverage(SERVER.serving.decay)
        else:
            strat, lim, serving = strategy(), limits(), None
        core = ServerCore(
            m,
            np.zeros(m.num_params, np.float32),
            strat,
            Path(tmp),
            lim,
            checkpoint_every=DEFAULTS.checkpoint_every if checkpoints else 10**9,
            checkpoint_log_ratio=DEFAULTS.checkpoint_log_ratio,
            serving=serving,
        )
        core.recover()
        checkpointed = 0
        start = time.perf_counter()
        if batch is None:
            for device, payload in items:
                assert core.handle(device, payload).ack.accepted
                checkpointed += core.maybe_checkpoint()
        else:  # as the service loop runs: batch i+1 is decoded while batch i's fsync runs
            in_flight: tuple[Commit, list[Outcome]] | None = None
            for i in range(0, len(items) + batch, batch):
                outs = [core.submit(d, p) for d, p in items[i : i + batch]]
                started = core.commit_start() if outs else None
                if in_flight is not None:
                    in_flight[0].wait()  # now its Acks may leave
                    assert all(o.ack.accepted for o in in_flight[1])
                    checkpointed += core.maybe_checkpoint()
                in_flight = None if started is None else (started, outs)
        elapsed = time.perf_counter() - start
        if checkpoints and not checkpointed:  # the rule waits longer than this run: time one
            elapsed += _amortised_checkpoint(core, items)  # and spread it over its interval
        core.close()
    return len(items) / elapsed


def _amortised_checkpoint(core: ServerCore, items: list[tuple[str, bytes]]) -> float:
    """Seconds of checkpointing this run owes: one real checkpoint, timed, times the share of
    the rule's interval (server.core.checkpoint_due) that these updates fill."""
    size = (core.state_dir / CHECKPOINT_NAME).stat().st_size
    start = time.perf_counter()
    core.checkpoint()
    took = time.perf_counter() - start
    per_record = float(np.mean([len(p) for _, p in items])) + 64  # + the record's meta
    every, ratio = DEFAULTS.checkpoint_every, DEFAULTS.checkpoint_log_ratio
    interval = next(  # the first record count at which the server's own rule checkpoints
        r
        for r in range(1, 10 * every + 1)
        if checkpoint_due(r, int(r * per_record), size, every, ratio)
    )
    return took * len(items) / interval


def disk(items: list[tuple[str, bytes]], batch: int) -> float:
    """Updates/s of writing the payloads raw, as the log writes them: writeback started every
    MiB (POSIX_FADV_DONTNEED), one fdatasync per batch."""
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        fd = os.open(Path(tmp) / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        offset = advised = 0
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            for _, payload in items[i : i + batch]:
                offset += os.write(fd, payload)
                if offset - advised >= 1 << 20:
                    os.posix_fadvise(fd, advised, offset - advised, os.POSIX_FADV_DONTNEED)
                    advised = offset
            os.fdatasync(fd)
        rate = len(items) / (time.perf_counter() - start)
        os.close(fd)
    return rate


def best(fn: Any, *args: Any, repeats: int = 3) -> float:
    return float(max(fn(*args) for _ in range(repeats)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=384, help="updates per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/server.json")
    args = parser.parse_args()

    bandwidth = copy_bandwidth()
    results: dict[str, Any] = {}
    rows = []
    for size_name, n in SIZES.items():
        m = manifest(n)
        flower_rate = flower(m)
        for codec_name, codec in CODECS.items():
            items = payloads(m, codec, args.updates)
            ingest(m, items[:4])  # compile / warm the kernels outside the clock
            ours, bnd = best(ingest, m, items), best(bound, m, items)
            group, each = best(durable, m, items, BATCH), best(durable, m, items, None)
            checkpointed = best(durable, m, items, BATCH, True)
            defaults = best(durable, m, items, BATCH, True, True)
            raw = best(disk, items, BATCH)
            payload_bytes = int(np.mean([len(p) for _, p in items]))
            entry = {
                "params": n,
                "codec": codec,
                "payload_bytes": payload_bytes,
                "updates": len(items),
                "updates_per_s": round(ours, 1),
                "bound_updates_per_s": round(bnd, 1),
                "fraction_of_bound": round(ours / bnd, 3),
                "memory_bound_updates_per_s": round(memory_bound(m, items, bandwidth), 1),
                "flower_float32_updates_per_s": round(flower_rate, 1),
                "durable_updates_per_s": round(group, 1),
                "durable_checkpointed_updates_per_s": round(checkpointed, 1),
                "server_defaults_updates_per_s": round(defaults, 1),
                "durable_fsync_per_update_updates_per_s": round(each, 1),
                "disk_updates_per_s": round(raw, 1),
                "durable_fraction_of_disk": round(group / raw, 3),
            }
            goal = GOALS.get((size_name, codec_name))
            if goal is not None:
                entry["durable_goal_updates_per_s"] = goal
                entry["durable_goal_met"] = group >= goal
            results.setdefault(size_name, {})[codec_name] = entry
            rows.append((size_name, codec_name, entry))

    head = ("model", "codec", "bytes", "ours/s", "bound/s", "ours/bnd", "memory/s", "flower/s",
            "durable/s", "+ckpt/s", "defaults", "fsync/upd", "disk/s", "dur/disk",
            "goal")  # fmt: skip
    keys = ("payload_bytes", "updates_per_s", "bound_updates_per_s", "fraction_of_bound",
            "memory_bound_updates_per_s", "flower_float32_updates_per_s", "durable_updates_per_s",
            "durable_checkpointed_updates_per_s", "server_defaults_updates_per_s",
            "durable_fsync_per_update_updates_per_s", "disk_updates_per_s",
            "durable_fraction_of_disk", "durable_goal_updates_per_s")  # fmt: skip
    print(("{:>6} {:>14} " + "{:>9} " * 13).format(*head))
    for size_name, codec_name, e in rows:
        vals = [e.get(k, "-") for k in keys]
        print(("{:>6} {:>14} " + "{:>9} " * 13).format(size_name, codec_name, *vals))
    print(f"\ncopy bandwidth {bandwidth / 1e9:.2f} GB/s (read + write), load {os.getloadavg()}")

    doc = {
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "copy_bandwidth_gb_s": round(bandwidth / 1e9, 2),
            "strategy": "fedbuff K=10, polynomial a=0.5",
            "admission": "max_norm=10 (clip)",
            "bound": "numpy dequantise (multiply codes by chunk scales into a reused scratch) + "
            "add into a float32 buffer; no checks, indices pre-decoded",
            "flower": "numpy weighted mean as Flower's aggregate(): K=10 float32 updates",
            "timing": "best of 3",
            "durable": f"group commit of {BATCH} (the server's default), log writer thread; "
            f"checkpointed: plus the default checkpoints (every {DEFAULTS.checkpoint_every} "
            f"records once the log holds {DEFAULTS.checkpoint_log_ratio:g}x the checkpoint's "
            "bytes)",
            "server_defaults": "durable + checkpoints with what an empty server.toml gives: "
            f"{SERVER.strategy} with its default K and staleness, the default robust defence "
            f"({DEFAULT_DEFENCE.label if DEFAULT_DEFENCE else 'none'}), default "
            f"admission limits, serving average decay {SERVER.serving.decay}",
        },
        "ingest": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
