"""Fused ingest: decode, admission arithmetic (finiteness, norm, clip), staleness weight and
accumulation with each update read once and the buffer touched once.

Where the time went before (profile, 1M-param int8, benchmarks/server.py): the codec expanded
the int8 codes into a float32 vector (cast + per-chunk multiply: two (n,) temporaries), admission
ran `isfinite` over all n values although int8 codes cannot be non-finite, took the norm over the
float vector, the clip made another copy, FedBuff made a weighted copy before adding it, and a
CRC32 of the whole payload (0.5 ms per MB here) identified redeliveries. A top-1% update paid
all of that on a dense vector of zeros.

Now:
    codecs.decode_parts      every decoder check; codes and scales kept as sent (a view of the
                             payload, no copy); finiteness only where values can be non-finite
                             (float codecs' values; quantised codecs' scales)
    sq_norm                  from codes and scales (exact integer code sums), k values for topk
    FusedDelta.add_into      out[i] += ((q_i * s_c) * clip) * w in one compiled loop
                             (server/ingest_kernels.py), bit-identical to the numpy path
    payload_digest           length + CRC32 of the message's first and last 4 KiB: header,
                             metrics and codec scales/indices, not the whole body

Strategies that only need sum_i w_i * delta_i (FedBuff) take a `FusedUpdate` through
`Strategy.apply_contribution`; any other strategy gets the dense `AdmittedUpdate` it always got.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from protocol.codecs import DecodedParts, IndexDecoder
from protocol.errors import ProtocolError, Reason
from server.kernel_size import KERNEL_MIN_VALUES
from server.strategies.base import AdmittedUpdate

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "KERNEL_MIN_VALUES",
    "FusedDelta",
    "FusedUpdate",
    "clip_factor",
    "index_decoder",
    "payload_digest",
    "same_payload",
    "scale_delta",
    "sgd_step_from_sum",
    "sq_norm",
    "warm_up",
]

F32 = npt.NDArray[np.float32]
_EDGE = 4096  # bytes of each end of a payload that identify it (see payload_digest)
_DIGEST_TAG = "h"  # not a hex digit: older digests were "<len hex>-<crc32 of it all>"


@cache
def _kernels() -> ModuleType:
    """The compiled kernels, imported on first use: importing numba and loading the cached
    machine code costs about a second, which a process that never fuses (FedAsync, FedAvg
    without a norm bound, the tools that only read the log) should not pay."""
    from server import ingest_kernels

    return ingest_kernels


def payload_digest(payload: bytes | memoryview) -> str:
    """Tells an identical redelivery from a different update with the same seq.

    Not a security check (a forged match earns only an Ack, never a second apply). A QoS 1
    redelivery is byte-identical; two different trainings differ in their header (metrics, base
    version) and in the codec's leading scales or indices, so the length and a CRC32 of the
    first and last 4 KiB tell them apart at a cost independent of the model size."""
    view = memoryview(payload)
    n = len(view)
    crc = zlib.crc32(view[:_EDGE])
    if n > _EDGE:
        crc = zlib.crc32(view[max(_EDGE, n - _EDGE) :], crc)
    return f"{_DIGEST_TAG}{n:x}-{crc:08x}"


def same_payload(payload: bytes | memoryview, digest: str) -> bool:
    """Whether `payload` is the update recorded with `digest` (either digest format)."""
    if digest.startswith(_DIGEST_TAG):
        return payload_digest(payload) == digest
    return f"{len(payload):x}-{zlib.crc32(payload):08x}" == digest  # logged before the tag


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


@dataclass(frozen=True, slots=True, eq=False)
class FusedDelta:
    """A decoded delta in codec form plus the clip factor admission chose for it."""

    parts: DecodedParts
    clip: float = 1.0  # 1.0 = untouched
    # the L2 norm before the clip when admission already computed it (sq_norm: the value a
    # replay recomputes), so a robust defence's norm does not read 1 MB of codes twice
    raw_norm: float | None = None

    def add_into(self, out: F32, weight: np.float32) -> None:
        """out += (delta * clip) * weight, in place, each element once. out: (n,) float32."""
        p = self.parts
        if out.dtype != np.float32 or out.shape != (p.length,) or not out.flags.c_contiguous:
            raise ValueError(f"accumulator must be a contiguous ({p.length},) float32 array")
        clip, clipping, w = np.float32(self.clip), self.clip != 1.0, np.float32(weight)
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

    def sparse(self, weight: np.float32) -> tuple[np.ndarray, np.ndarray] | None:
        """(positions (k,) int64, values (k,) float32) of a top-k delta, clipped and weighted
        with the float32 operations `add_into` does; None for a dense delta."""
        p = self.parts
        if p.index is None:
            return None
        vals = p.kept_values()  # (k,) float32
        if self.clip != 1.0:
            vals = vals * np.float32(self.clip)
        return p.index, vals * np.float32(weight)

    def dense(self) -> F32:
        """(n,) float32: exactly the delta the unfused path applied (decoded, then clipped)."""
        return scale_delta(self.parts.dense(), self.clip)


@dataclass(frozen=True, slots=True, eq=False)
class FusedUpdate:
    """An admitted update whose delta stays in codec form (a `Contribution`, see strategies)."""

    device_id: str
    seq: int
    base_version: int
    num_samples: int
    delta: FusedDelta

    def add_into(self, out: F32, weight: np.float32) -> None:
        self.delta.add_into(out, weight)

    def norm(self) -> float:
        """L2 norm of the delta as admitted (clipped), from its codes: no (n,) expansion."""
        d = self.delta
        raw = math.sqrt(sq_norm(d.parts)) if d.raw_norm is None else d.raw_norm
        return raw * d.clip

    def sparse(self, weight: np.float32) -> tuple[np.ndarray, np.ndarray] | None:
        return self.delta.sparse(weight)

    def admitted(self) -> AdmittedUpdate:
        """The dense form, for strategies that keep or inspect the whole vector."""
        return AdmittedUpdate(
            self.device_id, self.seq, self.base_version, self.num_samples, self.delta.dense()
        )
