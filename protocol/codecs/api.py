"""`encode` / `decode`: dispatch on a (validated) spec, then the lossless stage.

Order of checks on decode, cheapest first: spec (Reason.CODEC), `length` (Reason.SHAPE), payload
size against what spec and length allow (Reason.CODEC) -- all before any array is allocated --
then the codec's own structural checks and finiteness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.codecs.lossless import compress, decompress
from protocol.codecs.parts import DecodedParts
from protocol.codecs.quantized import Int4, Int8
from protocol.codecs.spec import validate_spec
from protocol.codecs.topk import IndexDecoder, TopK
from protocol.codecs.values import VALUE_CODECS
from protocol.errors import ProtocolError, Reason

__all__ = ["MAX_LENGTH", "decode", "decode_parts", "encode", "payload_size_range"]

MAX_LENGTH = 2**31 - 1  # elements; far above any edge model, keeps index arithmetic in int64

F32 = npt.NDArray[np.float32]


def _check_length(length: object) -> int:
    if not isinstance(length, int) or isinstance(length, bool):
        raise ProtocolError(Reason.SHAPE, f"length must be an int, got {type(length).__name__}")
    if not 0 <= length <= MAX_LENGTH:
        raise ProtocolError(Reason.SHAPE, f"length {length} outside [0, {MAX_LENGTH}]")
    return length


def payload_size_range(spec: Mapping[str, Any], length: int) -> tuple[int, int]:
    """Smallest and largest payload (before the lossless stage) for a normalised spec."""
    if spec["name"] == "topk":
        return TopK.size_range(spec, length)
    size = VALUE_CODECS[spec["name"]].size(spec, length)
    return size, size


def encode(vec: np.ndarray[Any, Any], spec: Mapping[str, Any]) -> bytes:
    """(n,) float32, finite -> payload bytes. ProtocolError(CODEC / SHAPE / DTYPE / NON_FINITE)."""
    norm = validate_spec(spec)
    x = np.asarray(vec)
    if x.ndim != 1:
        raise ProtocolError(Reason.SHAPE, f"expected a flat vector, got shape {x.shape}")
    if x.dtype != np.float32:
        raise ProtocolError(Reason.DTYPE, f"expected float32, got {x.dtype}")
    _check_length(x.size)
    if not np.isfinite(x).all():
        raise ProtocolError(Reason.NON_FINITE, "refusing to encode NaN or infinity")
    if norm["name"] == "topk":
        payload = TopK.encode(x, norm)
    else:
        payload = VALUE_CODECS[norm["name"]].encode(x, norm)
    return compress(payload, norm["lossless"])


def decode(data: bytes | memoryview, spec: Mapping[str, Any], length: int) -> F32:
    """Untrusted payload -> (length,) float32, finite. ProtocolError on any inconsistency.

    `length` is the caller's number (the manifest's num_params), not the payload's: the output
    is allocated from it, after the payload size has been checked against it.
    """
    return decode_parts(data, spec, length).dense()


_QUANTIZED = {"int8": Int8, "int4": Int4}


def _value_parts(
    buf: memoryview, spec: Mapping[str, Any], k: int, n: int, index: Any
) -> DecodedParts:
    name = spec["name"]
    if name in _QUANTIZED:
        codes, scales = _QUANTIZED[name].decode_codes(buf, spec, k)
        return DecodedParts(n, index, None, codes, scales, spec["chunk"])
    return DecodedParts(n, index, VALUE_CODECS[name].decode(buf, spec, k), None, None)


def decode_parts(
    data: bytes | memoryview,
    spec: Mapping[str, Any],
    length: int,
    *,
    index_decoder: IndexDecoder | None = None,
) -> DecodedParts:
    """`decode` without the final expansion: every check, codes and scales kept as sent.

    A memoryview payload is read in place (no copy) unless a lossless stage inflates it.
    `index_decoder` replaces topk's numpy index decoding (see `TopK.decode_index`).
    """
    norm = validate_spec(spec)
    n = _check_length(length)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(Reason.CODEC, f"payload must be bytes, got {type(data).__name__}")
    lo, hi = payload_size_range(norm, n)
    raw = decompress(data, norm["lossless"], hi) if norm["lossless"] != "none" else data
    if not lo <= len(raw) <= hi:
        want = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise ProtocolError(
            Reason.CODEC, f"{norm['name']} payload of {len(raw)} bytes, expected {want} for {n}"
        )
    buf = memoryview(raw).cast("B") if isinstance(raw, memoryview) else memoryview(raw)
    if norm["name"] == "topk":
        idx, values = TopK.decode_index(buf, norm, n, index_decoder)
        return _value_parts(values, norm["values"], int(idx.size), n, idx)
    return _value_parts(buf, norm, n, n, None)
