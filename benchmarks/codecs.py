"""Codec benchmark: every codec on one realistic 1M-parameter float32 delta, side by side.

Run from the repo root:  python benchmarks/codecs.py [--repeats N] [--out PATH]

The delta imitates one local round of a small CNN/MLP: ten layers (conv, dense, biases), each with
its own scale drawn log-uniformly from 1e-4..1e-2, per-output-row variation (lognormal), and
heavy-tailed values (Student-t, 3 degrees of freedom). Baseline: raw float32 (4 bytes/param).
Per codec: bytes on the wire, ratio vs float32 (raw bytes / codec bytes), max abs and RMS
error of decode(encode(x)) against x, and encode/decode throughput in MB of float32 input per
second (best of `--repeats`, through the public `encode` / `decode` with all their checks).
Whole messages: for the 9,610-parameter demo MLP (64-128-10) and this 1,000,724-parameter model,
the bytes of a complete ClientUpdate per codec, header included, in schema 2 (what agents send)
and schema 1 (deprecated), with the agent's three metrics; `x_smaller_than_float32` compares
whole schema 2 messages.
Writes benchmarks/results/codecs.json: {"meta": {...}, "codecs": [...], "messages": {...}}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the repo's packages, and don't let benchmarks/ shadow stdlib

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from protocol.codecs import decode, encode, format_codec_arg, parse_codec_arg  # noqa: E402
from protocol.messages import ClientUpdate, EncodedVector, encode_update  # noqa: E402
from protocol.update_header import encode_update_compact, header_size  # noqa: E402

CODECS = [
    "float32",
    "float32+zlib",
    "float16",
    "float16+zlib",
    "int8:256",
    "int8:256+zlib",
    "int8:64",
    "int4:64",
    "int4:64+zlib",
    "int4:32",
    "topk:0.01+int8:256",
    "topk:0.01+int8:256+zlib",
    "topk:0.01+float32",
    "topk:0.1+float16",
    "topk:0.1+float16+zlib",
    "topk:0.1+int8:256",
]
# (name, shape) of a small image model; 1,000,724 parameters in all
LAYERS = [
    ("conv1.weight", (64, 3, 3, 3)),
    ("conv1.bias", (64,)),
    ("conv2.weight", (128, 64, 3, 3)),
    ("conv2.bias", (128,)),
    ("fc1.weight", (384, 2048)),
    ("fc1.bias", (384,)),
    ("fc2.weight", (350, 384)),
    ("fc2.bias", (350,)),
    ("head.weight", (10, 350)),
    ("head.bias", (10,)),
]

# the demo's digits MLP 64-128-10: 9,610 parameters
SMALL_LAYERS = [("fc1.weight", (128, 64)), ("fc1.bias", (128,)), ("fc2.weight", (10, 128)),
                ("fc2.bias", (10,))]  # fmt: skip
MESSAGE_CODECS = [
    "float32",
    "float16",
    "int8:256",
    "int4:64",
    "topk:0.1+int8:256",
    "topk:0.02+int8:256",
    "topk:0.02+int8:256+zlib",
    "topk:0.01+int8:256",
]
AGENT_METRICS = {"loss": 0.4321, "train_s": 0.125, "partial": 0.0}  # what agent/update.py sends
MODEL_ID = "5f" * 32  # a sha256 model id

F32 = npt.NDArray[np.float32]


def realistic_delta(seed: int = 0, layers: list[tuple[str, tuple[int, ...]]] = LAYERS) -> F32:
    """(n,) float32: per-layer scales 1e-4..1e-2, per-row variation, Student-t(3) tails."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, shape in layers:
        scale = 10.0 ** rng.uniform(-4, -2)
        rows = shape[0]
        per_row = rng.lognormal(0.0, 0.5, size=(rows, 1))  # some neurons move more than others
        values = rng.standard_t(3, size=(rows, int(np.prod(shape[1:])))) * per_row * scale
        parts.append(values.ravel())
    return np.concatenate(parts).astype(np.float32)


def _best(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(x: F32, shorthand: str, repeats: int) -> dict[str, Any]:
    spec = parse_codec_arg(shorthand)
    t_enc, payload = _best(lambda: encode(x, spec), repeats)
    t_dec, y = _best(lambda: decode(payload, spec, x.size), repeats)
    err = y.astype(np.float64) - x
    mb = x.nbytes / 1e6
    return {
        "codec": format_codec_arg(spec),
        "spec": spec,
        "bytes": len(payload),
        "ratio_vs_float32": x.nbytes / len(payload),  # how many times smaller than raw float32
        "bits_per_param": 8 * len(payload) / x.size,
        "max_abs_error": float(np.abs(err).max()),
        "rms_error": float(np.sqrt(np.mean(err**2))),
        "relative_rms_error": float(np.sqrt(np.mean(err**2) / np.mean(x.astype(np.float64) ** 2))),
        "encode_mb_s": mb / t_enc,
        "decode_mb_s": mb / t_dec,
    }


def message_sizes(x: F32) -> list[dict[str, Any]]:
    """Whole ClientUpdate bytes per codec (header included), schema 2 and schema 1."""
    rows: list[dict[str, Any]] = []
    for shorthand in MESSAGE_CODECS:
        spec = parse_codec_arg(shorthand)
        vec = EncodedVector(spec, encode(x, spec), int(x.size))
        msg = ClientUpdate(MODEL_ID, 12, "dev-001", 37, 180, 10, vec, AGENT_METRICS)
        compact = encode_update_compact(msg)
        bare = encode_update_compact(ClientUpdate(MODEL_ID, 12, "dev-001", 37, 180, 10, vec, {}))
        rows.append(
            {
                "codec": format_codec_arg(spec),
                "payload_bytes": len(vec.data),
                "message_bytes": len(compact),
                "header_bytes": header_size(compact),
                "header_bytes_without_metrics": header_size(bare),
                "schema1_message_bytes": len(encode_update(msg)),
            }
        )
    f32 = rows[0]["message_bytes"]
    for r in rows:
        r["x_smaller_than_float32"] = round(f32 / r["message_bytes"], 2)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'codec':<26}{'bytes':>11}{'x smaller':>10}{'bits/p':>8}{'max|err|':>11}"
        f"{'rms err':>11}{'rel rms':>9}{'enc MB/s':>10}{'dec MB/s':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['codec']:<26}{r['bytes']:>11,}{r['ratio_vs_float32']:>10.2f}"
            f"{r['bits_per_param']:>8.2f}{r['max_abs_error']:>11.3e}{r['rms_error']:>11.3e}"
            f"{r['relative_rms_error']:>9.4f}{r['encode_mb_s']:>10.0f}{r['decode_mb_s']:>10.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="best of N timings (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/codecs.json")
    args = parser.parse_args(argv)

    x = realistic_delta()
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    print(
        f"delta: {x.size:,} float32 params ({x.nbytes:,} bytes raw), "
        f"|x| max {np.abs(x).max():.3e}, rms {rms:.3e}; best of {args.repeats}"
    )
    rows = [measure(x, c, args.repeats) for c in CODECS]
    print(table(rows))
    messages = {}
    for name, delta in (("9610", realistic_delta(1, SMALL_LAYERS)), (str(x.size), x)):
        messages[name] = message_sizes(delta)
        print(f"\nwhole messages, {int(name):,} params (schema 2 with the agent's 3 metrics):")
        print(
            f"{'codec':<26}{'payload':>10}{'message':>10}{'header':>8}{'schema 1':>10}{'x<f32':>8}"
        )
        for r in messages[name]:
            print(
                f"{r['codec']:<26}{r['payload_bytes']:>10,}{r['message_bytes']:>10,}"
                f"{r['header_bytes']:>8}{r['schema1_message_bytes']:>10,}"
                f"{r['x_smaller_than_float32']:>8.1f}"
            )
    meta = {
        "benchmark": "codecs",
        "num_params": int(x.size),
        "raw_float32_bytes": int(x.nbytes),
        "delta": "10 layers, per-layer scale 10**U(-4,-2), per-row lognormal(0,0.5), Student-t(3)",
        "repeats": args.repeats,
        "ratio_vs_float32": "raw float32 bytes / codec bytes (higher is smaller)",
        "mb_s": "MB (1e6 bytes) of float32 input per second, best of repeats",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "codecs": rows, "messages": messages}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
