"""Every codec configuration the shared suite runs against, and each one's stated error bound.

The bound checker reads the payload's own layout (scales, indices) so that it checks the codec's
promise against what was actually sent: float32 exact; float16 |err| <= max(|x| 2**-11, 2**-25);
int8/int4 |err| <= s/2 per chunk for the transmitted scale s (plus float32 rounding); topk keeps
exactly the largest |x|, drops the rest to exactly 0, and kept values obey the value codec.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.codecs import parse_codec_arg, topk_count
from protocol.codecs.values import VALUE_CODECS
from protocol.codecs.varint import decode_varints

SHORTHANDS = [
    "float32",
    "float32+zlib",
    "float16",
    "float16+zlib",
    "int8",
    "int8:7",
    "int8:1+zlib",
    "int4",
    "int4:3",
    "int4:16+zlib",
    "topk:0.1",
    "topk:0.3+float32+zlib",
    "topk:0.01+int8:16+zlib",
    "topk:0.5+int4:5",
    "topk:1.0+float16",
    "topk:0.2+int8",
]
SPECS: list[dict[str, Any]] = [parse_codec_arg(s) for s in SHORTHANDS]
QMAX = {"int8": 127, "int4": 7}
F16_MAX = 65504.0

F32 = npt.NDArray[np.float32]


def uses_float16(spec: dict[str, Any]) -> bool:
    return "float16" in (spec["name"], spec.get("values", {}).get("name"))


def inner_payload(payload: bytes, spec: dict[str, Any]) -> bytes:
    return zlib.decompress(payload) if spec["lossless"] == "zlib" else payload


def assert_within_bound(x: F32, y: F32, spec: dict[str, Any], raw: bytes) -> None:
    """x: what was encoded, y: what decoded, raw: the payload after the lossless stage."""
    assert y.dtype == np.float32
    assert y.shape == x.shape
    name = spec["name"]
    if name == "float32":
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))  # bit-exact, -0.0 included
    elif name == "float16":
        x64 = x.astype(np.float64)
        bound = np.maximum(np.abs(x64) * 2.0**-11, 2.0**-25)
        assert (np.abs(x64 - y) <= bound).all()
    elif name in QMAX:
        _assert_quantized(x, y, spec, raw)
    else:
        _assert_topk(x, y, spec, raw)


def _assert_quantized(x: F32, y: F32, spec: dict[str, Any], raw: bytes) -> None:
    chunk, qmax = spec["chunk"], QMAX[spec["name"]]
    m = -(-x.size // chunk)
    scales = np.frombuffer(raw, dtype="<f4", count=m).astype(np.float64)  # (m,)
    for c in range(m):  # test code: clarity over speed
        xc = x[c * chunk : (c + 1) * chunk].astype(np.float64)
        yc = y[c * chunk : (c + 1) * chunk].astype(np.float64)
        s, peak = scales[c], np.abs(xc).max()
        # the scale is max|x| / qmax up to float32 rounding (an ulp or two)
        assert s >= peak / qmax * (1 - 2.0**-21)
        assert s <= peak / qmax * (1 + 2.0**-21) + 2.0**-148
        assert (np.abs(xc - yc) <= s * (0.5 + 2e-5) + 2.0**-149).all()


def _assert_topk(x: F32, y: F32, spec: dict[str, Any], raw: bytes) -> None:
    n, values = x.size, spec["values"]
    k = topk_count(spec["fraction"], n)
    split = len(raw) - VALUE_CODECS[values["name"]].size(values, k)
    idx = np.cumsum(decode_varints(memoryview(raw)[:split], k))  # (k,)
    assert idx.size == k
    assert (np.diff(idx) > 0).all()
    dropped = np.ones(n, dtype=bool)
    dropped[idx] = False
    assert (y[dropped] == 0).all()  # dropped entries decode to exactly zero
    if k and dropped.any():  # ... and they are exactly the smallest magnitudes
        assert np.abs(x[dropped]).max() <= np.abs(x[idx]).min()
    assert_within_bound(x[idx], y[idx], values, raw[split:])
