"""Telling a redelivered update from a new one, cheaply: the digest the sequence table keeps.

The rest of the fused ingest path lives below admission: the arithmetic in server/kernels/fused.py
(norms and weighted adds straight from codes), the value types in server/admitted.py.
A CRC32 of the whole payload cost 0.5 ms per MB here; the digest reads only both ends.
"""

from __future__ import annotations

import zlib

__all__ = ["payload_digest", "same_payload"]

_EDGE = 4096  # bytes of each end of a payload that identify it (see payload_digest)
_DIGEST_TAG = "h"  # not a hex digit: older digests were "<len hex>-<crc32 of it all>"


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
