"""Fused ingest arithmetic: an update's norm and its weighted add straight from its codes, the
clip factor, and the one-pass sgd step from a buffer's sum; numpy below KERNEL_MIN_VALUES values,
the compiled loops of server/kernels/ingest.py from there on (the same float32 operations in the
same order, so a model is bit-identical whichever path built it: tests/unit/server/test_ingest.py).

Where the time went before fusing (profile, 1M-param int8, benchmarks/server.py): the codec
expanded the int8 codes into a float32 vector (two (n,) temporaries), admission ran `isfinite`
over codes that cannot be non-finite, the clip made another copy and FedBuff a weighted copy
before adding it. Now each update is read once or twice (norm, then add) and the buffer once.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from protocol.codecs import DecodedParts, IndexDecoder
from protocol.errors import ProtocolError, Reason
from server.kernels import KERNEL_MIN_VALUES

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "KERNEL_MIN_VALUES",
    "add_parts",
    "clip_factor",
    "index_decoder",
    "scale_delta",
    "sgd_step_from_sum",
    "sq_norm",
    "warm_up",
]

F32 = npt.NDArray[np.float32]


@cache
def _kernels() -> ModuleType:
    """The compiled kernels, imported on first use: importing numba and loading the cached
    machine code costs about a second, which a process that never fuses (FedAsync, FedAvg
    without a norm bound, the tools that only read the log) should not pay."""
    from server.kernels import ingest

    return ingest


def warm_up(num_params: int) -> None:
    """Load (or compile, first run after install: seconds) every kernel now, at start-up, so the
    first large update does not pay for it while a device waits for its Ack. A model smaller
    than KERNEL_MIN_VALUES never reaches the kernels: numba is then not even imported."""
    if num_params < KERNEL_MIN_VALUES:
        return
    k = _kernels()
    out, index = np.zeros(4, np.float32), np.array([0, 2], np.int64)  # (4,), (2,)
    codes, scales, values = np.ones(4, np.int8), np.ones(1, np.float32), np.ones(4, np.float32)
    one = np.float32(1)
    k.sq_norm_codes(codes, scales, 4)
    k.sq_norm_values(values)
    k.add_codes_dense(out, codes, scales, 4, one, True, one)
    k.add_codes_sparse(out, index, codes[:2], scales, 4, one, True, one)
    k.add_values_dense(out, values, one, True, one)
    k.add_values_sparse(out, index, values[:2], one, True, one)
    k.topk_positions(np.array([1, 2], np.uint8), 2, 4, index)
    k.sgd_step_from_sum(out, out.copy(), one, one, True, out.copy())


_INDEX_REFUSALS = {
    1: "varint section truncated",
    2: "wrong number of varints",
    3: "varint longer than 5 bytes",
    4: "over-long varint encoding",
    5: "topk indices not strictly increasing (duplicate)",
    6: "topk index gap beyond the vector's length",
    7: "topk index out of range",
}


def index_decoder(num_params: int) -> IndexDecoder | None:
    """The compiled topk index decoder for a model that uses the kernels, else None (numpy's).

    One pass over the varints instead of numpy's dozen (0.2 ms for a top-1% update of a 1M
    model); it accepts and refuses exactly the same bytes (tests/unit/server/test_ingest.py)."""
    return _decode_positions if num_params >= KERNEL_MIN_VALUES else None


def _decode_positions(buf: memoryview, count: int, n: int) -> npt.NDArray[np.int64]:
    out = np.empty(count, np.int64)  # (k,)
    status = _kernels().topk_positions(np.frombuffer(buf, np.uint8), count, n, out)
    if status:
        raise ProtocolError(Reason.CODEC, _INDEX_REFUSALS[int(status)])
    return out


def scale_delta(delta: np.ndarray, scale: float) -> np.ndarray:
    """The one place a clip factor is applied to a dense delta, so log replay reproduces it."""
    if scale == 1.0:
        return delta
    return delta * np.float32(scale)  # (n,) float32


def sq_norm(parts: DecodedParts) -> float:
    """Squared L2 norm of the decoded vector, in float64, without expanding it."""
    if parts.length < KERNEL_MIN_VALUES:
        return _sq_norm_numpy(parts)
    _k = _kernels()
    if parts.codes is not None:
        assert parts.scales is not None
        return float(_k.sq_norm_codes(parts.codes, parts.scales, parts.chunk))
    assert parts.values is not None
    return float(_k.sq_norm_values(parts.values))


def _sq_norm_numpy(parts: DecodedParts) -> float:
    """sq_norm for small updates, where numpy's per-call cost beats importing the kernels."""
    if parts.codes is None:
        assert parts.values is not None
        v = parts.values.astype(np.float64)  # (k,)
        return float(np.dot(v, v))
    assert parts.scales is not None
    if parts.codes.size == 0:
        return 0.0
    q = parts.codes.astype(np.int64)  # (k,) exact squares and sums
    sums = np.add.reduceat(q * q, np.arange(0, q.size, parts.chunk))  # (m,) per chunk
    s = parts.scales.astype(np.float64)  # (m,)
    return float(np.dot(s * s, sums.astype(np.float64)))


def sgd_step_from_sum(x: F32, total: F32, weight: float, eta: float) -> F32:
    """x + eta * (total / weight) as a fresh (n,) float32 array, with `total` zeroed, in one
    pass over both (the compiled kernel: call it for models of KERNEL_MIN_VALUES or more)."""
    out = np.empty_like(x)
    w, e = np.float32(weight), np.float32(eta)
    _kernels().sgd_step_from_sum(x, total, w, e, e != 1, out)
    return out


def clip_factor(norm: float, max_norm: float) -> float:
    """max_norm / norm when the norm exceeds the bound, else 1.0 (untouched)."""
    return max_norm / norm if norm > max_norm and math.isfinite(norm) else 1.0


def add_parts(out: F32, p: DecodedParts, clip_by: float, weight: np.float32) -> None:
    """out += (delta * clip_by) * weight, in place, each element of a delta still in codec form
    read once (the compiled loops from KERNEL_MIN_VALUES values on). out: (n,) float32."""
    if out.dtype != np.float32 or out.shape != (p.length,) or not out.flags.c_contiguous:
        raise ValueError(f"accumulator must be a contiguous ({p.length},) float32 array")
    clip, clipping, w = np.float32(clip_by), clip_by != 1.0, np.float32(weight)
    if p.length < KERNEL_MIN_VALUES:  # the numpy form of the same float32 operations
        vals = p.kept_values()  # (k,) float32
        if clipping:
            vals = vals * clip
        if p.index is None:
            out += vals * w
        else:
            out[p.index] += vals * w  # indices strictly increasing: no repeats
        return
    _k = _kernels()
    if p.codes is not None:
        assert p.scales is not None
        if p.index is None:
            _k.add_codes_dense(out, p.codes, p.scales, p.chunk, clip, clipping, w)
        elif p.index.size:
            _k.add_codes_sparse(out, p.index, p.codes, p.scales, p.chunk, clip, clipping, w)
        return
    assert p.values is not None
    if p.index is None:
        _k.add_values_dense(out, p.values, clip, clipping, w)
    elif p.index.size:
        _k.add_values_sparse(out, p.index, p.values, clip, clipping, w)
