"""Symmetric per-chunk quantisation: `int8` (q in [-127, 127]) and `int4` (q in [-7, 7]).

The vector is cut into chunks of `chunk` elements (the last may be short). Each chunk has one
float32 scale s = max|x| / QMAX (QMAX = 127 or 7), rounded *up* by one ulp when float32 rounding
would leave QMAX * s < max|x|, so no element is clipped (exception: within an ulp of FLT_MAX it
is rounded down instead, so QMAX * s stays finite; the clip then costs < 2e-5 * s);
q = round_half_even(x / s); x' = q * s. Error bound per chunk: |x - x'| <= s / 2, plus float32
rounding of the quotient and product (< 2e-5 * s; tests use s * (0.5 + 2e-5) + 2**-149).

Layout (little-endian, no header; the spec and `length` travel beside it), m = ceil(n / chunk):

    int8:  m x <f4 scales | n x int8 q                                   4m + n bytes
    int4:  m x <f4 scales | ceil(n/2) bytes, element 2i in the low nibble,
           element 2i+1 in the high nibble, nibble = q + 8 (1..15)       4m + ceil(n/2) bytes

Decoding refuses (untrusted input):
  * a NaN/Inf scale, or one so large that QMAX * s overflows float32    -> Reason.NON_FINITE
  * a negative scale (sign bit set, -0.0 included)                        -> Reason.CODEC
  * a zero scale on a chunk with any q != 0 (zero scale is legal only for an all-zero chunk,
    which is exactly what the encoder writes for one)                     -> Reason.CODEC
  * q = -128 in int8, nibble 0 (q = -8) in int4, or an int4 padding nibble (the high nibble of
    the last byte when n is odd) other than 8                             -> Reason.CODEC
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from protocol.errors import ProtocolError, Reason

__all__ = ["Int4", "Int8", "dequantize"]

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]
# |v| at or above this rounds to infinity in float32 (FLT_MAX + half an ulp)
_OVERFLOW = float(2**128 - 2**103)


def _nchunks(n: int, chunk: int) -> int:
    return -(-n // chunk)


def _scales(x: F32, chunk: int, qmax: int) -> F32:
    """(n,) -> (m,) float32 scales, >= max|x| / qmax exactly unless that would overflow."""
    m = np.maximum.reduceat(np.abs(x), np.arange(0, x.size, chunk))  # (m,) float32
    s = m / np.float32(qmax)  # (m,) float32, may round down by half an ulp
    up = np.nextafter(s, np.float32(np.inf))
    down = np.nextafter(s, np.float32(0))
    short = s.astype(np.float64) * qmax < m  # rounding left qmax * s below max|x|
    fits = up.astype(np.float64) * qmax < _OVERFLOW  # rounding up must not make q*s overflow
    over = s.astype(np.float64) * qmax >= _OVERFLOW  # only for max|x| within an ulp of FLT_MAX
    return np.where(over, down, np.where(short & fits, up, s)).astype(np.float32)


def _divide(x: F32, s: F32, chunk: int) -> F32:
    """x / s chunk-wise without materialising a per-element scale vector."""
    n, full = x.size, x.size // chunk
    safe = np.where(s == 0, np.float32(1), s)  # an all-zero chunk has s = 0: x / 1 = 0
    out = np.empty(n, dtype=np.float32)  # (n,)
    out[: full * chunk].reshape(full, chunk)[:] = (
        x[: full * chunk].reshape(full, chunk) / safe[:full, None]
    )
    if full * chunk < n:
        out[full * chunk :] = x[full * chunk :] / safe[full]
    return out


def dequantize(q: I8, s: F32, chunk: int) -> F32:
    """(n,) codes times their chunk's scale -> (n,) float32 (the decoder's one expansion)."""
    n, full = q.size, q.size // chunk
    out = np.empty(n, dtype=np.float32)  # (n,)
    qf = q.astype(np.float32)
    out[: full * chunk].reshape(full, chunk)[:] = (
        qf[: full * chunk].reshape(full, chunk) * s[:full, None]
    )
    if full * chunk < n:
        out[full * chunk :] = qf[full * chunk :] * s[full]
    return out


def _fail(reason: Reason, name: str, detail: str) -> ProtocolError:
    return ProtocolError(reason, f"{name}: {detail}")


class _Quantized:
    name: ClassVar[str]
    qmax: ClassVar[int]

    @classmethod
    def _packed_size(cls, n: int) -> int:
        raise NotImplementedError

    @classmethod
    def _pack(cls, q: I8) -> bytes:
        raise NotImplementedError

    @classmethod
    def _unpack(cls, buf: memoryview, n: int) -> I8:
        raise NotImplementedError

    @classmethod
    def size(cls, spec: Mapping[str, Any], n: int) -> int:
        return 4 * _nchunks(n, spec["chunk"]) + cls._packed_size(n)

    @classmethod
    def encode(cls, x: F32, spec: Mapping[str, Any]) -> bytes:
        if x.size == 0:
            return b""
        chunk = spec["chunk"]
        s = _scales(x, chunk, cls.qmax)  # (m,) float32
        q = np.clip(np.rint(_divide(x, s, chunk)), -cls.qmax, cls.qmax).astype(np.int8)  # (n,)
        return s.astype("<f4").tobytes() + cls._pack(q)

    @classmethod
    def decode(cls, buf: memoryview, spec: Mapping[str, Any], n: int) -> F32:
        q, s = cls.decode_codes(buf, spec, n)
        return dequantize(q, s, spec["chunk"])

    @classmethod
    def decode_codes(cls, buf: memoryview, spec: Mapping[str, Any], n: int) -> tuple[I8, F32]:
        """Every decoder check, without expanding: (n,) int8 codes and (m,) float32 scales."""
        chunk = spec["chunk"]
        m = _nchunks(n, chunk)
        s = np.frombuffer(buf, dtype="<f4", count=m).astype(np.float32)  # (m,)
        if not np.isfinite(s).all():
            raise _fail(Reason.NON_FINITE, cls.name, "NaN or infinite chunk scale")
        if (s.astype(np.float64) * cls.qmax >= _OVERFLOW).any():
            raise _fail(Reason.NON_FINITE, cls.name, "chunk scale overflows float32 when applied")
        if np.signbit(s).any():
            raise _fail(Reason.CODEC, cls.name, "negative chunk scale")
        q = cls._unpack(buf[4 * m :], n)  # (n,) int8 in [-qmax, qmax]
        zero = s == 0
        if zero.any():
            nonzero = np.logical_or.reduceat(q != 0, np.arange(0, n, chunk))  # (m,)
            if (zero & nonzero).any():
                raise _fail(Reason.CODEC, cls.name, "zero scale on a chunk with non-zero values")
        return q, s


class Int8(_Quantized):
    name = "int8"
    qmax = 127

    @classmethod
    def _packed_size(cls, n: int) -> int:
        return n

    @classmethod
    def _pack(cls, q: I8) -> bytes:
        return q.tobytes()

    @classmethod
    def _unpack(cls, buf: memoryview, n: int) -> I8:
        q = np.frombuffer(buf, dtype=np.int8, count=n)  # (n,) read-only view
        if n and int(q.min()) < -127:
            raise _fail(Reason.CODEC, "int8", "value -128 is outside the symmetric range")
        return q


class Int4(_Quantized):
    name = "int4"
    qmax = 7

    @classmethod
    def _packed_size(cls, n: int) -> int:
        return (n + 1) // 2

    @classmethod
    def _pack(cls, q: I8) -> bytes:
        nib = (q + 8).astype(np.uint8)  # (n,) in 1..15
        if nib.size % 2:
            nib = np.append(nib, np.uint8(8))  # padding nibble encodes q = 0
        return (nib[0::2] | (nib[1::2] << 4)).tobytes()  # (ceil(n/2),) uint8

    @classmethod
    def _unpack(cls, buf: memoryview, n: int) -> I8:
        packed = np.frombuffer(buf, dtype=np.uint8, count=(n + 1) // 2)  # (ceil(n/2),)
        nib = np.empty(2 * packed.size, dtype=np.uint8)  # (2 * ceil(n/2),)
        nib[0::2] = packed & 0x0F
        nib[1::2] = packed >> 4
        if n % 2 and nib[n] != 8:
            raise _fail(Reason.CODEC, "int4", "padding nibble is not 8 (zero)")
        if (nib[:n] == 0).any():
            raise _fail(Reason.CODEC, "int4", "nibble 0 (q = -8) is outside the symmetric range")
        return (nib[:n].astype(np.int8) - 8).astype(np.int8)
