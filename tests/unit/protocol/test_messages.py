"""Every message round-trips; hostile bytes raise ProtocolError with the right reason."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest, ParamSpec
from protocol.messages import (
    SCHEMA,
    Ack,
    ClientUpdate,
    DeviceStatus,
    EncodedVector,
    ModelOffer,
    decode_ack,
    decode_offer,
    decode_status,
    decode_update,
    decode_vector,
    encode_ack,
    encode_offer,
    encode_status,
    encode_update,
    encode_vector,
)

MANIFEST = Manifest("mlp", (ParamSpec("w", (3, 2)), ParamSpec("b", (2,))), "x", (3,), 2)


def _update(**changes: object) -> ClientUpdate:
    base = ClientUpdate(
        model_id=MANIFEST.model_id,
        base_version=4,
        device_id="dev-1",
        seq=7,
        num_samples=32,
        local_steps=10,
        delta=encode_vector(np.arange(8, dtype=np.float32) / 8, {"name": "float32"}),
        metrics={"loss": 0.5},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _raw_update(**overrides: object) -> bytes:
    """A valid update's wire map with some fields replaced (or removed when set to ...)."""
    doc = msgpack.unpackb(encode_update(_update()), raw=False)
    for key, value in overrides.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    out: bytes = msgpack.packb(doc, use_bin_type=True)
    return out


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
u63 = st.integers(0, 2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60)
@given(ids, u63, u63, st.integers(1, 10**9), u63, st.dictionaries(ids, finite, max_size=5))
def test_update_round_trips(
    device: str, version: int, seq: int, samples: int, steps: int, metrics: dict[str, float]
) -> None:
    update = _update(
        device_id=device,
        base_version=version,
        seq=seq,
        num_samples=samples,
        local_steps=steps,
        metrics=metrics,
    )
    assert decode_update(encode_update(update)) == update


@settings(max_examples=40)
@given(u63, finite, st.floats(0, 10), st.binary(max_size=64))
def test_offer_round_trips(version: int, created: float, mu: float, signature: bytes) -> None:
    weights = encode_vector(np.ones(8, np.float32), {"name": "float16"})
    offer = ModelOffer(MANIFEST.model_id, version, MANIFEST.digest, weights, created, mu, signature)
    assert decode_offer(encode_offer(offer)) == offer


@given(ids, u63, st.booleans(), st.sampled_from(list(Reason)), u63, st.text(max_size=100))
def test_ack_round_trips(
    device: str, seq: int, accepted: bool, reason: Reason, version: int, detail: str
) -> None:
    ack = Ack(device, seq, accepted, reason, version, detail)
    assert decode_ack(encode_ack(ack)) == ack


@given(
    ids,
    st.booleans(),
    st.one_of(st.none(), u63),
    st.dictionaries(ids, st.one_of(st.none(), st.booleans(), finite), max_size=6),
)
def test_status_round_trips(
    device: str, online: bool, version: int | None, conditions: dict[str, float | bool | None]
) -> None:
    status = DeviceStatus(device, online, "training", version, "eligible", conditions, 1.5)
    assert decode_status(encode_status(status)) == status


def test_decode_vector_returns_manifest_length_float32() -> None:
    vec = np.linspace(-1, 1, 8, dtype=np.float32)
    out = decode_vector(encode_vector(vec, {"name": "float32"}), MANIFEST)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vec)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reason.MALFORMED),
        (b"\xc1", Reason.MALFORMED),  # msgpack's never-used byte
        (encode_update(_update())[:-3], Reason.MALFORMED),  # truncated
        (encode_update(_update()) + b"\x00", Reason.MALFORMED),  # trailing bytes
        (msgpack.packb([1, 2, 3]), Reason.MALFORMED),  # not a map
        (msgpack.packb({1: 2}), Reason.MALFORMED),  # non-string key
        (_raw_update(schema=SCHEMA + 1), Reason.SCHEMA),
        (_raw_update(schema=...), Reason.SCHEMA),
        (_raw_update(kind="ack"), Reason.SCHEMA),
        (_raw_update(seq="7"), Reason.FIELD),
        (_raw_update(seq=-1), Reason.FIELD),
        (_raw_update(seq=True), Reason.FIELD),
        (_raw_update(num_samples=1.5), Reason.FIELD),
        (_raw_update(local_steps=...), Reason.FIELD),
        (_raw_update(device_id="a/b"), Reason.BAD_DEVICE_ID),
        (_raw_update(device_id="+"), Reason.BAD_DEVICE_ID),
        (_raw_update(model_id="x#"), Reason.UNKNOWN_MODEL),
        (_raw_update(delta=[1, 2]), Reason.MALFORMED),
        (_raw_update(delta={"codec": {}, "data": "text", "length": 8}), Reason.FIELD),
        (_raw_update(delta={"codec": {}, "data": b"", "length": -1}), Reason.FIELD),
        (_raw_update(metrics={"loss": float("nan")}), Reason.NON_FINITE),
        (_raw_update(metrics={"loss": "low"}), Reason.FIELD),
    ],
)
def test_hostile_update_bytes_are_refused_with_reason(payload: bytes, reason: Reason) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_update(payload)
    assert info.value.reason is reason


def test_oversize_is_refused_before_parsing() -> None:
    payload = encode_update(_update())
    with pytest.raises(ProtocolError) as info:
        decode_update(payload, max_bytes=len(payload) - 1)
    assert info.value.reason is Reason.OVERSIZE


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        (EncodedVector({"name": "float32"}, b"\x00" * 28, 7), Reason.SHAPE),  # wrong length
        (EncodedVector({"name": "float32"}, b"\x00" * 28, 8), Reason.CODEC),  # short data
        (EncodedVector({"name": "nope"}, b"\x00" * 32, 8), Reason.CODEC),
        (
            EncodedVector({"name": "float32"}, np.full(8, np.nan, "<f4").tobytes(), 8),
            Reason.NON_FINITE,
        ),
        (
            EncodedVector({"name": "float32"}, np.full(8, np.inf, "<f4").tobytes(), 8),
            Reason.NON_FINITE,
        ),
    ],
)
def test_bad_vectors_are_refused_against_the_manifest(
    vector: EncodedVector, reason: Reason
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_vector(vector, MANIFEST)
    assert info.value.reason is reason


def test_unknown_ack_reason_is_a_field_error() -> None:
    doc = msgpack.unpackb(encode_ack(Ack("d", 1, False, Reason.STALE, 3)), raw=False)
    doc["reason"] = "because"
    with pytest.raises(ProtocolError) as info:
        decode_ack(msgpack.packb(doc))
    assert info.value.reason is Reason.FIELD


def test_fuzzed_payloads_raise_only_protocol_errors() -> None:
    """A few thousand random and mutated payloads: decoding raises nothing but ProtocolError."""
    rng = np.random.default_rng(1234)
    seeds = [
        encode_update(_update()),
        encode_ack(Ack("dev-1", 3, True, Reason.OK, 9)),
        encode_offer(
            ModelOffer(MANIFEST.model_id, 1, MANIFEST.digest, _update().delta, 0.0, 0.0, b"s")
        ),
        encode_status(DeviceStatus("d", True, "idle", None, "", {"battery": 50.0}, 1.0)),
    ]
    decoders = [decode_update, decode_ack, decode_offer, decode_status]
    refused = 0
    for i in range(3000):
        seed = bytearray(seeds[i % len(seeds)])
        if i % 3 == 0:
            data = rng.bytes(int(rng.integers(0, 200)))
        else:
            for _ in range(int(rng.integers(1, 6))):
                pos = int(rng.integers(0, len(seed)))
                seed[pos] = int(rng.integers(0, 256))
            data = bytes(seed[: int(rng.integers(1, len(seed) + 1))])
        for decode in decoders:
            try:
                message = decode(data)
            except ProtocolError:
                refused += 1
                continue
            if isinstance(message, ClientUpdate | ModelOffer):
                try:
                    decode_vector(
                        message.delta if isinstance(message, ClientUpdate) else message.weights,
                        MANIFEST,
                    )
                except ProtocolError:
                    refused += 1
    assert refused > 3000  # the fuzzer really did produce mostly-invalid input
