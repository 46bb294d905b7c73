"""ClientUpdate schema 2 (compact header): round trips, sizes, schema 1 still decoding, and hostile
headers refused with reason codes."""

from __future__ import annotations

import string
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codecs
from protocol.errors import ProtocolError, Reason
from protocol.messages import ClientUpdate, EncodedVector, decode_update, encode_update
from protocol.update_header import (
    decode_any_update,
    decode_update_compact,
    encode_codec_compact,
    encode_update_compact,
    header_size,
)
from tests.unit.protocol.codec_cases import SPECS

MODEL = "ab" * 32  # a sha256 hex digest


def _update(**kw: Any) -> ClientUpdate:
    fields: dict[str, Any] = {
        "model_id": MODEL,
        "base_version": 3,
        "device_id": "dev-001",
        "seq": 7,
        "num_samples": 32,
        "local_steps": 10,
        "delta": EncodedVector(codecs.parse_codec_arg("topk:0.02+int8"), b"\x01\x02\x03", 9610),
        "metrics": {},
    }
    fields.update(kw)
    return ClientUpdate(**fields)


def _header(*items: Any) -> bytes:
    return bytes(msgpack.packb(list(items), use_bin_type=True))


GOOD = [2, bytes.fromhex(MODEL), 3, "dev-001", 7, 32, 10, [6, 20000], 9610, {}]


def _refused(data: bytes) -> Reason:
    with pytest.raises(ProtocolError) as err:
        decode_any_update(data)
    return err.value.reason


# --- round trips ---------------------------------------------------------------------------

_f32 = st.floats(-(2.0**100), 2.0**100, width=32, allow_nan=False)
_metrics = st.dictionaries(
    st.sampled_from(["loss", "train_s", "partial", "accuracy", "grad_norm", "x"]), _f32, max_size=5
)


@settings(max_examples=200, deadline=None)
@given(
    digest=st.binary(min_size=32, max_size=32),
    base=st.integers(0, 2**63 - 1),
    device=st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=40).filter(
        lambda d: d[0].isalnum()
    ),
    seq=st.integers(0, 2**63 - 1),
    samples=st.integers(-(2**63) + 1, 2**63 - 1),
    steps=st.integers(0, 2**63 - 1),
    spec=st.sampled_from(SPECS),
    length=st.integers(0, 1 << 30),
    metrics=_metrics,
    payload=st.binary(max_size=300),
)
def test_compact_update_round_trips(
    digest: bytes,
    base: int,
    device: str,
    seq: int,
    samples: int,
    steps: int,
    spec: dict[str, Any],
    length: int,
    metrics: dict[str, float],
    payload: bytes,
) -> None:
    vec = EncodedVector(spec, payload, length)
    sent = ClientUpdate(digest.hex(), base, device, seq, samples, steps, vec, metrics)
    data = encode_update_compact(sent)
    got = decode_any_update(data)
    assert got == sent  # memoryview data compares equal to bytes by content
    assert bytes(got.delta.data) == payload
    assert len(data) == header_size(data) + len(payload)


@settings(max_examples=200, deadline=None)
@given(
    frac=st.floats(1e-9, 1.0, exclude_min=False),
    value=st.sampled_from(codecs.VALUE_NAMES),
    chunk=st.integers(1, 1 << 24),
    zlib=st.booleans(),
)
def test_codec_spec_round_trips_exactly(frac: float, value: str, chunk: int, zlib: bool) -> None:
    inner: dict[str, Any] = {"name": value}
    if value in codecs.DEFAULT_CHUNK:
        inner["chunk"] = chunk
    for spec in (
        {**inner, "lossless": "zlib" if zlib else "none"},
        {"name": "topk", "fraction": frac, "values": inner, "lossless": "zlib" if zlib else "none"},
    ):
        norm = codecs.validate_spec(spec)
        sent = _update(delta=EncodedVector(norm, b"", 5))
        assert decode_any_update(encode_update_compact(sent)).delta.codec == norm


def test_codec_compact_forms_by_hand() -> None:
    assert encode_codec_compact(codecs.parse_codec_arg("float32")) == [0]
    assert encode_codec_compact(codecs.parse_codec_arg("int8")) == [2]  # default chunk omitted
    assert encode_codec_compact(codecs.parse_codec_arg("int4:16+zlib")) == [3 | 8, 16]
    assert encode_codec_compact(codecs.parse_codec_arg("topk:0.02+int8")) == [2 | 4, 20000]
    assert encode_codec_compact(codecs.parse_codec_arg("topk:0.0123456789")) == [4, "0.0123456789"]


def test_codec_named_forms_by_hand() -> None:
    assert encode_codec_compact(codecs.parse_codec_arg("float32"), 3) == ["float32", 0]
    assert encode_codec_compact(codecs.parse_codec_arg("int4:16+zlib"), 3) == ["int4", 2, 16]
    assert encode_codec_compact(codecs.parse_codec_arg("topk:0.02+int8"), 3) == ["int8", 1, 20000]


@pytest.mark.parametrize("spec", SPECS, ids=codecs.format_codec_arg)
def test_schema_3_carries_every_codec_and_schema_2_stays_what_is_written(
    spec: dict[str, Any],
) -> None:
    sent = _update(delta=EncodedVector(codecs.validate_spec(spec), b"\x05" * 7, 40))
    as_2, as_3 = encode_update_compact(sent), encode_update_compact(sent, schema=3)
    assert msgpack.unpackb(as_2[: header_size(as_2)])[0] == 2  # every codec today has a code
    assert msgpack.unpackb(as_3[: header_size(as_3)], strict_map_key=False)[0] == 3
    assert decode_any_update(as_2) == decode_any_update(as_3) == sent


def test_a_value_codec_without_a_schema_2_code_travels_as_schema_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A codec added to protocol/codecs after schema 2's four codes were taken (int4 plays it
    here) needs no wire change: the update goes out as schema 3 and decodes as sent."""
    from protocol import update_header

    monkeypatch.setattr(update_header, "_VALUE_CODES", ("float32", "float16", "int8"))
    sent = _update(delta=EncodedVector(codecs.parse_codec_arg("topk:0.05+int4:32"), b"ab", 90))
    data = encode_update_compact(sent)
    header = msgpack.unpackb(data[: header_size(data)], strict_map_key=False)
    assert header[0] == 3 and header[7] == ["int4", 1, 50000, 32]
    assert decode_any_update(data) == sent


def test_header_of_a_small_topk_update_is_at_most_64_bytes() -> None:
    x = np.random.default_rng(0).standard_normal(9610).astype(np.float32)
    spec = codecs.parse_codec_arg("topk:0.02+int8")
    payload = codecs.encode(x, spec)
    bare = encode_update_compact(_update(delta=EncodedVector(spec, payload, 9610)))
    assert header_size(bare) == 57
    assert len(bare) == 57 + len(payload)
    legacy = encode_update(_update(delta=EncodedVector(spec, payload, 9610)))
    assert len(legacy) - len(payload) > 200  # what schema 2 saves
    agent_metrics = {"loss": 0.4321, "train_s": 0.125, "partial": 0.0}
    with_metrics = encode_update_compact(
        _update(delta=EncodedVector(spec, payload, 9610), metrics=agent_metrics)
    )
    assert header_size(with_metrics) == 57 + 14  # {0: f32, 1: f32, 2: 0}
    got = decode_any_update(with_metrics).metrics
    assert got == {"loss": pytest.approx(0.4321, rel=1e-7), "train_s": 0.125, "partial": 0.0}


def test_schema_1_still_decodes_as_before() -> None:
    sent = _update(metrics={"loss": 0.4321})
    data = encode_update(sent)
    assert decode_any_update(data) == decode_update(data) == sent
    assert decode_any_update(data).metrics["loss"] == 0.4321  # float64 kept on schema 1


def test_payload_is_a_view_not_a_copy() -> None:
    data = encode_update_compact(_update(delta=EncodedVector({"name": "float32"}, b"\0" * 64, 16)))
    got = decode_update_compact(data)
    assert isinstance(got.delta.data, memoryview)
    assert got.delta.data.obj is data


# --- hostile variants ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([4, *GOOD[1:]], Reason.SCHEMA),  # unknown schema refused by name
        (["2", *GOOD[1:]], Reason.SCHEMA),
        ([], Reason.SCHEMA),
        (GOOD[:-1], Reason.MALFORMED),  # missing field
        ([*GOOD, 1], Reason.MALFORMED),  # extra field
        ([2, b"\0" * 31, *GOOD[2:]], Reason.FIELD),  # short digest
        ([2, "ab" * 32, *GOOD[2:]], Reason.FIELD),  # hex text instead of 32 bytes
        ([*GOOD[:2], -1, *GOOD[3:]], Reason.FIELD),  # negative base version
        ([*GOOD[:2], True, *GOOD[3:]], Reason.FIELD),  # bool is not an int
        ([*GOOD[:3], "../evil", *GOOD[4:]], Reason.BAD_DEVICE_ID),
        ([*GOOD[:3], 5, *GOOD[4:]], Reason.FIELD),
        ([*GOOD[:4], 2**64 - 1, *GOOD[5:]], Reason.FIELD),  # seq beyond 2**63 - 1
        ([*GOOD[:6], 1.5, *GOOD[7:]], Reason.FIELD),  # local steps not an int
        ([*GOOD[:7], [16], *GOOD[8:]], Reason.CODEC),  # codec code out of range
        ([*GOOD[:7], [], *GOOD[8:]], Reason.CODEC),
        ([*GOOD[:7], [6], *GOOD[8:]], Reason.CODEC),  # topk without a fraction
        ([*GOOD[:7], [6, 0], *GOOD[8:]], Reason.CODEC),  # fraction 0
        ([*GOOD[:7], [6, 2_000_000], *GOOD[8:]], Reason.CODEC),  # fraction 2
        ([*GOOD[:7], [6, "nan"], *GOOD[8:]], Reason.CODEC),
        ([*GOOD[:7], [6, "x" * 40], *GOOD[8:]], Reason.CODEC),
        ([*GOOD[:7], [6, 0.02], *GOOD[8:]], Reason.CODEC),  # a float fraction must be text
        ([*GOOD[:7], [2, 0], *GOOD[8:]], Reason.CODEC),  # chunk 0
        ([*GOOD[:7], [0, 256], *GOOD[8:]], Reason.CODEC),  # float32 has no chunk
        ([*GOOD[:7], [6, 20000, 256, 1], *GOOD[8:]], Reason.CODEC),
        ([*GOOD[:7], "int8", *GOOD[8:]], Reason.CODEC),
        ([*GOOD[:8], -1, GOOD[9]], Reason.FIELD),  # negative length
        ([*GOOD[:8], 1 << 31, GOOD[9]], Reason.FIELD),
        ([*GOOD[:9], {99: 1.0}], Reason.FIELD),  # unknown short metric key
        ([*GOOD[:9], {"loss": float("nan")}], Reason.NON_FINITE),
        ([*GOOD[:9], {"loss": "low"}], Reason.FIELD),
        ([*GOOD[:9], {0: 1.0, "loss": 2.0}], Reason.FIELD),  # the same metric twice
        ([*GOOD[:9], [1.0]], Reason.FIELD),
        ([*GOOD[:9], {str(i): 1.0 for i in range(65)}], Reason.MALFORMED),  # over the map limit
        # schema 3: the value codec by name, then flags
        ([3, *GOOD[1:7], [6, 20000], *GOOD[8:]], Reason.CODEC),  # a schema 2 code, no name
        ([3, *GOOD[1:7], ["int8"], *GOOD[8:]], Reason.CODEC),  # no flags
        ([3, *GOOD[1:7], ["int8", 4], *GOOD[8:]], Reason.CODEC),  # flags out of range
        ([3, *GOOD[1:7], ["int8", True], *GOOD[8:]], Reason.CODEC),
        ([3, *GOOD[1:7], ["bf16", 0], *GOOD[8:]], Reason.CODEC),  # a codec this side lacks
        ([3, *GOOD[1:7], ["x" * 40, 0], *GOOD[8:]], Reason.CODEC),
        ([3, *GOOD[1:7], ["int8", 1], *GOOD[8:]], Reason.CODEC),  # topk without a fraction
        ([3, *GOOD[1:7], ["topk", 1, 20000], *GOOD[8:]], Reason.CODEC),  # topk of topk
        ([3, *GOOD[1:7], ["int8", 1, 20000, 256, 1], *GOOD[8:]], Reason.CODEC),
    ],
)
def test_hostile_header_is_refused_with_a_reason(items: list[Any], reason: Reason) -> None:
    assert _refused(_header(*items) + b"payload") is reason


def test_good_header_decodes() -> None:  # the base of every hostile variant above is valid
    got = decode_any_update(_header(*GOOD) + b"xyz")
    assert got.model_id == MODEL and got.delta.codec == codecs.parse_codec_arg("topk:0.02+int8")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.MALFORMED),
        (b"\xc1", Reason.MALFORMED),  # neither an array nor a map
        (b"\x2a", Reason.MALFORMED),  # a bare int
        (_header(*GOOD)[:20], Reason.MALFORMED),  # truncated header
        (b"\x9a" + b"\xc1" * 10, Reason.MALFORMED),  # not msgpack inside
        (b"\x9a\xda\x13\x88" + b"a" * 5000, Reason.MALFORMED),  # header beyond 4 KiB
        (bytes(msgpack.packb({"schema": 3, "kind": "client_update"})), Reason.SCHEMA),
    ],
)
def test_hostile_bytes_are_refused_with_a_reason(data: bytes, reason: Reason) -> None:
    assert _refused(data) is reason


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError) as err:
        decode_any_update(_header(*GOOD) + b"\0" * 100, max_bytes=64)
    assert err.value.reason is Reason.OVERSIZE


def test_encoder_refuses_a_model_id_that_is_not_a_digest() -> None:
    with pytest.raises(ProtocolError) as err:
        encode_update_compact(_update(model_id="tiny-model"))
    assert err.value.reason is Reason.UNKNOWN_MODEL
