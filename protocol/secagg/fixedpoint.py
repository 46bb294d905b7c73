"""Fixed point in Z_{2^b}: clip, scale, stochastic rounding, wrap-free sums of up to K updates.

    x  <- x * min(1, C (1 - 2^-20) / ||x||_2)     in float64: ||x||_2 <= C after float32 too
    q  =  floor(x * s + U),  U ~ Uniform[0, 1)     unbiased: E[q] = x * s
    z  =  q mod 2^b                                two's complement in a uint16 / uint32
    s  =  ((2^(b-1-h) - 1) / K - 1) / C            so |sum of K q's| <= K (C s + 1) < 2^(b-1-h)

h = HEADROOM_BITS: an honest cohort's sum fills at most half the signed range, so a clip that
rounds a hair over C cannot wrap it (ten float32 clips of 17.04 to C = 10 once decoded as -10),
and the server's check of the decoded sum (cohort.py) sees an oversized sum before it wraps.
With distributed noise of standard deviation sigma on the sum (noise.py), the scale also leaves
8 sigma s: K (C s + 1) + 8 sigma s < 2^(b-1-h) (a wrap then has probability < 1e-15).

Sums of z in uint arithmetic wrap mod 2^b exactly as the masks need; `decode_sum` maps the
result back to signed integers and divides by s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.secagg.errors import SecAggError, SecAggReason

__all__ = ["BITS", "HEADROOM_BITS", "clip_l2", "decode_sum", "encode", "scale_for", "uint_dtype"]

BITS = (16, 32)
HEADROOM_BITS = 1  # honest sums stay below 2^(b-2): costs one bit of precision
_CLIP_MARGIN = 1.0 - 2.0**-20  # float32 rounding moves a norm by at most 2^-24 relative
F32 = npt.NDArray[np.float32]


def uint_dtype(bits: int) -> np.dtype[Any]:
    if bits not in BITS:
        raise SecAggError(SecAggReason.BAD_PARAMS, f"bit width {bits} not in {BITS}")
    return np.dtype("<u2") if bits == 16 else np.dtype("<u4")


def scale_for(bits: int, clip: float, members: int, noise_std: float = 0.0) -> float:
    """The largest scale s for which `members` clipped, rounded (and noised) updates cannot wrap."""
    uint_dtype(bits)
    if not (clip > 0 and np.isfinite(clip)) or members < 1 or not noise_std >= 0:
        raise SecAggError(SecAggReason.BAD_PARAMS, f"clip {clip} / members {members} invalid")
    scale = (((1 << (bits - 1 - HEADROOM_BITS)) - 1) - members) / (members * clip + 8.0 * noise_std)
    if scale <= 0:
        raise SecAggError(SecAggReason.BAD_PARAMS, f"{members} members do not fit {bits} bits")
    return scale


def clip_l2(x: F32, clip: float) -> F32:
    """x scaled to an L2 norm of at most `clip`, checked in float64 after the float32 cast."""
    wide = x.astype(np.float64)  # (n,) float64
    norm = float(np.linalg.norm(wide))
    if norm <= clip or norm == 0.0:
        return x
    return (wide * (clip * _CLIP_MARGIN / norm)).astype(np.float32)


def encode(x: F32, scale: float, bits: int, rng: np.random.Generator) -> npt.NDArray[Any]:
    """(n,) float32, |x_i| <= C -> (n,) uint16/uint32 in Z_{2^b} with stochastic rounding."""
    if not np.isfinite(x).all():
        raise SecAggError(SecAggReason.BAD_VECTOR, "update holds NaN or infinity")
    y = x.astype(np.float64) * scale  # (n,) float64, |y| < 2^(b-1) / K
    low = np.floor(y)
    q = (low + (rng.random(y.shape[0]) < (y - low))).astype(np.int64)  # (n,) int64
    return (q & ((1 << bits) - 1)).astype(uint_dtype(bits))


def decode_sum(z: npt.NDArray[Any], scale: float, bits: int) -> npt.NDArray[np.float64]:
    """(n,) uint sum in Z_{2^b} -> (n,) float64 real sum (two's complement, / s)."""
    signed = z.astype(np.int64)
    signed[signed >= (1 << (bits - 1))] -= 1 << bits
    return signed.astype(np.float64) / scale
