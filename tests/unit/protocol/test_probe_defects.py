"""Regression tests for the outside probe's protocol findings (issue 15, defects 4 and 8).

4. msgpack object bomb: 8 MB of 65,536 arrays of 120 empty maps was decoded whole (+509 MiB,
   1.4 s) before any structure check. It must be refused fast, with a reason, in bounded memory.
8. A genuine signed offer with an extra field still verified: the signature covered only the
   fields the decoder knows. Unknown fields must be refused.
"""

from __future__ import annotations

import time
import tracemalloc

import msgpack
import numpy as np
import pytest

from protocol.errors import ProtocolError, Reason
from protocol.messages import (
    ModelOffer,
    decode_ack,
    decode_offer,
    decode_status,
    decode_update,
    encode_offer,
    encode_vector,
)
from protocol.signing import generate_keypair, sign_offer, verify_offer


def _bomb() -> bytes:
    """The probe's shape: an update-looking map whose metrics hold 65,536 arrays of 120 {}."""
    inner = b"\xdc\x00\x78" + b"\x80" * 120  # array16 of 120 empty fixmaps
    outer = b"\xdd" + (65_536).to_bytes(4, "big") + inner * 65_536  # array32 of those
    head = msgpack.packb({"schema": 1, "kind": "client_update"}, use_bin_type=True)
    # same map with a third key whose value is the bomb: fixmap header 0x83 instead of 0x82
    return b"\x83" + head[1:] + msgpack.packb("metrics") + outer


@pytest.mark.parametrize("decode", [decode_update, decode_offer])
def test_object_bomb_is_refused_fast_in_bounded_memory(decode: object) -> None:
    bomb = _bomb()
    assert 7_000_000 < len(bomb) < 9_000_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ProtocolError) as refused:
            decode(bomb)  # type: ignore[operator]
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.reason is Reason.MALFORMED, refused.value
    # Whole decoding took 509 MiB and 1.4 s; the payload itself is 8 MiB (not traced: built
    # before tracing started). Allow a few MiB of bookkeeping, far below the bomb's expansion.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert elapsed < 0.5, f"{elapsed:.2f} s"


@pytest.mark.parametrize("decode", [decode_ack, decode_status])
def test_small_messages_refuse_a_container_flood(decode: object) -> None:
    head = msgpack.packb({"schema": 1, "kind": "x"}, use_bin_type=True)
    flood = b"\x83" + head[1:] + msgpack.packb("conditions") + b"\xdc\x10\x00" + b"\x90" * 4096
    with pytest.raises(ProtocolError) as refused:
        decode(flood)  # type: ignore[operator]
    assert refused.value.reason is Reason.MALFORMED


def _signed_offer() -> tuple[bytes, object]:
    key, public = generate_keypair()
    weights = encode_vector(np.arange(4, dtype=np.float32), {"name": "float32"})
    offer = sign_offer(ModelOffer("m1", 3, "d" * 64, weights, 1700000000.0, 0.0), key)
    return encode_offer(offer), public


def test_genuine_offer_still_decodes_and_verifies() -> None:
    data, public = _signed_offer()
    verify_offer(decode_offer(data), public)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "where",
    [
        lambda doc: doc.update(extra="injected"),  # top level
        lambda doc: doc["weights"].update(extra=1),  # inside the weights vector
    ],
)
def test_genuine_offer_with_an_extra_field_is_refused(where: object) -> None:
    data, public = _signed_offer()
    doc = msgpack.unpackb(data, raw=False)
    where(doc)  # type: ignore[operator]
    tampered = msgpack.packb(doc, use_bin_type=True)
    with pytest.raises(ProtocolError) as refused:
        verify_offer(decode_offer(tampered), public)  # type: ignore[arg-type]
    assert refused.value.reason in (Reason.FIELD, Reason.BAD_SIGNATURE)
