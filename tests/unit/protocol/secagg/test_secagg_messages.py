"""Secure-aggregation messages: exact round trips and cheapest-first refusals with reasons."""

from __future__ import annotations

import msgpack
import pytest

from protocol.errors import ProtocolError, Reason
from protocol.secagg.messages import (
    AnyDown,
    AnyUp,
    CohortAnnounce,
    CohortResult,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    Member,
    SecAggJoin,
    ShareBundle,
    ShareOut,
    SharesMessage,
    UnmaskRequest,
    UnmaskResponse,
    decode_down,
    decode_up,
    encode,
)

CID = bytes(range(16))
ID_PK, SIG, SIG2 = b"\x0a" * 32, b"\x0b" * 64, b"\x0c" * 64
SHARE = ShareOut("dev-b", b"\x01" * 148, b"\x02" * 32, b"\x03" * 32)
ANNOUNCE = CohortAnnounce(
    cohort_id=CID, model_id="mlp.v1", base_version=7, num_params=1000, kept=100, bits=16,
    clip=2.5, threshold=3, degree=0, seed=b"\x09" * 32,
    members=tuple(Member(f"dev-{c}", bytes([i]) * 32, bytes([i + 1]) * 32, ID_PK, SIG, SIG2)
                  for i, c in enumerate("abcd")),
)  # fmt: skip
UP: list[AnyUp] = [
    SecAggJoin("dev-a", "mlp.v1", b"\x05" * 32, b"\x06" * 32, ID_PK, SIG, SIG2),
    SharesMessage("dev-a", CID, b"\x07" * 32, (SHARE,)),
    MaskedInput("dev-a", CID, 12, b"\x00\x01" * 100, ("dev-c",)),
    ConsistencySignature("dev-a", CID, SIG),
    UnmaskResponse("dev-a", CID, {"dev-b": b"\x01" * 66}, {"dev-c": b"\x02" * 66}),
]
DOWN: list[AnyDown] = [
    ANNOUNCE,
    ShareBundle(CID, ("dev-a", "dev-b", "dev-c"), (SHARE,)),
    ConsistencyRequest(CID, ("dev-a", "dev-b")),
    UnmaskRequest(CID, ("dev-a", "dev-b"), ("dev-c",), {"dev-a": SIG, "dev-b": SIG2}),
    CohortResult(CID, False, "below_threshold: 2 masked", 9),
    CohortResult(CID, True, "ok", 10, b"\x09" * 32),
]


@pytest.mark.parametrize("msg", UP, ids=lambda m: type(m).__name__)
def test_up_round_trip(msg: AnyUp) -> None:
    assert decode_up(encode(msg)) == msg


@pytest.mark.parametrize("msg", DOWN, ids=lambda m: type(m).__name__)
def test_down_round_trip(msg: AnyDown) -> None:
    assert decode_down(encode(msg)) == msg


def _reason(data: bytes, down: bool = False, max_bytes: int = 1 << 24) -> Reason:
    with pytest.raises(ProtocolError) as err:
        (decode_down if down else decode_up)(data, max_bytes)
    return err.value.reason


def _raw(**doc: object) -> bytes:
    out: bytes = msgpack.packb(doc, use_bin_type=True)
    return out


def test_refusals_cheapest_first() -> None:
    join = encode(UP[0])
    assert _reason(join, max_bytes=10) is Reason.OVERSIZE  # size before parsing
    assert _reason(b"\xc1garbage") is Reason.MALFORMED
    assert _reason(_raw(schema=2, kind="secagg_join")) is Reason.SCHEMA
    assert _reason(_raw(schema=1, kind="client_update")) is Reason.SCHEMA
    assert _reason(encode(ANNOUNCE)) is Reason.SCHEMA  # a down message on the up path
    many = tuple(ShareOut(f"d{i}", b"\x00" * 2000, b"\x02" * 32, b"\x03" * 32) for i in range(600))
    big = encode(SharesMessage("dev-a", CID, b"\x07" * 32, many))
    assert len(big) > 1 << 20 and _reason(big) is Reason.OVERSIZE  # only masked may be large


def test_field_refusals() -> None:
    bad_key = _raw(schema=1, kind="secagg_join", device_id="dev-a", model_id="m",
                   c_pk=b"\x00" * 31, s_pk=b"\x00" * 32)  # fmt: skip
    assert _reason(bad_key) is Reason.FIELD
    bad_id = _raw(schema=1, kind="secagg_join", device_id="dev/+", model_id="m",
                  c_pk=b"\x00" * 32, s_pk=b"\x00" * 32)  # fmt: skip
    assert _reason(bad_id) is Reason.BAD_DEVICE_ID
    short_cohort = encode(UnmaskRequest(b"\x00" * 15, ("a",), (), {}))
    assert _reason(short_cohort, down=True) is Reason.FIELD
    repeated = encode(UnmaskRequest(CID, ("dev-a", "dev-a"), (), {}))
    assert _reason(repeated, down=True) is Reason.FIELD
    short_sig = encode(UnmaskRequest(CID, ("dev-a",), (), {"dev-a": SIG[:63]}))
    assert _reason(short_sig, down=True) is Reason.FIELD
    assert _reason(encode(ConsistencySignature("dev-a", CID, SIG + b"\x00"))) is Reason.FIELD
    from dataclasses import replace

    assert _reason(encode(replace(ANNOUNCE, bits=8)), down=True) is Reason.FIELD
    assert _reason(encode(replace(ANNOUNCE, kept=1001)), down=True) is Reason.FIELD
    assert _reason(encode(replace(ANNOUNCE, clip=-1.0)), down=True) is Reason.FIELD
    dup = replace(ANNOUNCE, members=ANNOUNCE.members + ANNOUNCE.members[:1])
    assert _reason(encode(dup), down=True) is Reason.FIELD
    zero_samples = encode(MaskedInput("dev-a", CID, 0, b"", ()))
    assert _reason(zero_samples) is Reason.FIELD
    short_member_key = encode(CohortResult(CID, True, "ok", 1, b"\x09" * 5))
    assert _reason(short_member_key, down=True) is Reason.FIELD
    short = replace(ANNOUNCE.members[0], advert_sig=SIG2[:32])
    unsigned = replace(ANNOUNCE, members=(short, *ANNOUNCE.members[1:]))
    assert _reason(encode(unsigned), down=True) is Reason.FIELD


# --- garbage at the size cap (outside probe: 4.2 MB cost 0.3 s and +282 MiB to decode) ------

_CAP_1M = 64 * 1024 + 1_000_000 * 4  # the server's secagg_up cap for a 1M-parameter model


def _masked_head() -> bytes:
    """A secagg_masked-looking map with one more key, whose value the caller appends."""
    head = msgpack.packb({"schema": 1, "kind": "secagg_masked"}, use_bin_type=True)
    return b"\x83" + head[1:] + msgpack.packb("junk")


def _map_bomb() -> bytes:  # 1,000 arrays of 4,000 empty maps: 4 million dicts
    return _masked_head() + b"\xdc\x03\xe8" + (b"\xdc\x0f\xa0" + b"\x80" * 4000) * 1000


def _str_bomb() -> bytes:  # 1,000 arrays of 1,000 three-letter strings: no maps at all
    return _masked_head() + b"\xdc\x03\xe8" + (b"\xdc\x03\xe8" + b"\xa3abc" * 1000) * 1000


@pytest.mark.parametrize("bomb", [_map_bomb, _str_bomb])
def test_garbage_at_the_size_cap_is_refused_in_bounded_memory(bomb: object) -> None:
    import time
    import tracemalloc

    data = bomb()  # type: ignore[operator]
    assert 3_900_000 < len(data) <= _CAP_1M
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ProtocolError) as refused:
            decode_up(data, _CAP_1M)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # larger than any message but a masked vector, and not shaped like one
    assert refused.value.reason is Reason.OVERSIZE, refused.value
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"  # the payload is 4 MB
    assert elapsed < 2.5, f"{elapsed:.2f} s"  # 4 ms here; the unbounded decoder took 3.6 s


def test_a_masked_input_at_the_size_cap_still_decodes() -> None:
    big = MaskedInput("dev-a", CID, 12, b"\x07" * 4_000_000, tuple(f"d{i}" for i in range(999)))
    assert decode_up(encode(big), _CAP_1M) == big
