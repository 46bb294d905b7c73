"""Dense float codecs: `float32` (exact) and `float16` (half precision).

Layout (n elements, little-endian, no header -- the spec and `length` travel beside it):

    float32:  n x <f4     4n bytes, bit-exact round trip (including -0.0 and subnormals)
    float16:  n x <f2     2n bytes, round-to-nearest-even

float16 error bound: |x - x'| <= max(|x| * 2**-11, 2**-25) (relative half-ulp for normal halves,
absolute half-ulp of the smallest subnormal below 2**-14). Values with |x| >= 65520 would round to
infinity; encoding refuses them (Reason.CODEC) rather than silently saturating. Decoding refuses
NaN/Inf elements (Reason.NON_FINITE) by their bits, before any cast: casting a signalling-NaN half
(e.g. 0x7d00) to float32 raises "invalid value encountered in cast" on aarch64 numpy (FACTS.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.errors import ProtocolError, Reason

__all__ = ["FLOAT16_LIMIT", "Float16", "Float32"]

FLOAT16_LIMIT = 65520.0  # smallest |x| that rounds to inf in float16 (65504 + half ulp)
_F16_EXPONENT = 0x7C00  # all-ones exponent: +-inf (zero mantissa) or a NaN (quiet or signalling)

F32 = npt.NDArray[np.float32]


def _check_finite(out: F32, name: str) -> F32:
    if not np.isfinite(out).all():
        raise ProtocolError(Reason.NON_FINITE, f"{name} payload holds NaN or infinity")
    return out


class Float32:
    name = "float32"

    @staticmethod
    def size(spec: Mapping[str, Any], n: int) -> int:
        return 4 * n

    @staticmethod
    def encode(x: F32, spec: Mapping[str, Any]) -> bytes:
        return x.astype("<f4", copy=False).tobytes()

    @staticmethod
    def decode(buf: memoryview, spec: Mapping[str, Any], n: int) -> F32:
        out = np.frombuffer(buf, dtype="<f4", count=n).astype(np.float32)  # (n,) copy
        return _check_finite(out, "float32")


class Float16:
    name = "float16"

    @staticmethod
    def size(spec: Mapping[str, Any], n: int) -> int:
        return 2 * n

    @staticmethod
    def encode(x: F32, spec: Mapping[str, Any]) -> bytes:
        if x.size and float(np.abs(x).max()) >= FLOAT16_LIMIT:
            raise ProtocolError(
                Reason.CODEC, f"value beyond the float16 range (|x| >= {FLOAT16_LIMIT:g})"
            )
        return x.astype("<f2").tobytes()  # (n,) float16

    @staticmethod
    def decode(buf: memoryview, spec: Mapping[str, Any], n: int) -> F32:
        bits = np.frombuffer(buf, dtype="<u2", count=n)  # (n,) uint16 view, no float op yet
        if ((bits & _F16_EXPONENT) == _F16_EXPONENT).any():
            raise ProtocolError(Reason.NON_FINITE, "float16 payload holds NaN or infinity")
        return bits.view("<f2").astype(np.float32)  # (n,) finite, so the cast never signals
