"""Hostile payloads: each refusal is a ProtocolError with the right Reason; fuzz sees no other."""

from __future__ import annotations

import struct
import warnings
import zlib
from typing import Any

import numpy as np
import pytest

from protocol.codecs import MAX_LENGTH, decode, encode, parse_codec_arg
from protocol.codecs.varint import encode_varints
from protocol.errors import ProtocolError, Reason
from tests.unit.protocol.codec_cases import SHORTHANDS, SPECS

NAN = struct.pack("<f", float("nan"))
INF = struct.pack("<f", float("inf"))
FLT_MAX = struct.pack("<f", float(np.finfo(np.float32).max))


def refused(reason: Reason, data: Any, spec: Any, length: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(data, spec, length)
    assert info.value.reason is reason, info.value


def sample(n: int = 50) -> np.ndarray[Any, Any]:
    return np.random.default_rng(0).laplace(0, 1e-2, size=n).astype(np.float32)


# ---- size: truncated, extended, wrong length ------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_truncated_payload(spec: dict[str, Any]) -> None:
    payload = encode(sample(), spec)
    for cut in (1, 2, len(payload) // 2, len(payload)):
        refused(Reason.CODEC, payload[: len(payload) - cut], spec, 50)


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_extended_payload(spec: dict[str, Any]) -> None:
    payload = encode(sample(), spec)
    for extra in (b"\x00", b"\x01\x02\x03", bytes(4000)):
        refused(Reason.CODEC, payload + extra, spec, 50)


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_payload_for_another_length(spec: dict[str, Any]) -> None:
    # topk's k = round(fraction * n) is the same for nearby lengths, so its payload is only
    # refused when k changes (the manifest, not the codec, pins the exact length)
    payload = encode(sample(), spec)
    for length in (0, 5000) if spec["name"] == "topk" else (0, 1, 49, 51, 5000):
        refused(Reason.CODEC, payload, spec, length)


@pytest.mark.parametrize("length", [-1, MAX_LENGTH + 1, True, 3.0, "50", None])
def test_bad_length_is_a_shape_error(length: Any) -> None:
    refused(Reason.SHAPE, encode(sample(), {"name": "float32"}), {"name": "float32"}, length)


@pytest.mark.parametrize("data", ["text", None, [1, 2], 12])
def test_payload_must_be_bytes(data: Any) -> None:
    refused(Reason.CODEC, data, {"name": "float32"}, 3)


def test_huge_length_is_refused_before_allocating() -> None:
    # a tiny payload claiming 2**31 - 1 elements must be refused by size, not by a MemoryError
    refused(Reason.CODEC, b"\x00" * 16, {"name": "float32"}, MAX_LENGTH)
    refused(Reason.CODEC, b"\x00" * 16, parse_codec_arg("topk:1.0+int8"), MAX_LENGTH)


# ---- spec -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "int16"},
        {"name": "topk", "fraction": 0.1, "values": {"name": "topk", "fraction": 0.5}},
        {"name": "int8", "chunk": 0},
        {"name": "topk", "fraction": 1.5},
        "float32",
    ],
)
def test_decode_with_wrong_spec(spec: Any) -> None:
    refused(Reason.CODEC, b"\x00" * 8, spec, 2)


# ---- dense floats ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, struct.pack("<f", float("-inf"))])
def test_float32_non_finite_element(bad: bytes) -> None:
    refused(Reason.NON_FINITE, struct.pack("<f", 1.0) + bad, {"name": "float32"}, 2)


@pytest.mark.parametrize("bad", ["007c", "00fc", "007e"])  # +inf, -inf, NaN as <f2
def test_float16_non_finite_element(bad: str) -> None:
    refused(Reason.NON_FINITE, bytes.fromhex("003c" + bad), {"name": "float16"}, 2)


# Signalling NaNs (quiet bit 0x0200 clear): aarch64 numpy warned "invalid value encountered in
# cast" when decoding them (FACTS.md). The refusal must carry its reason and raise no warning;
# the aarch64 CI job (ci/aarch64) runs this test under emulation, where it failed before the fix.
@pytest.mark.parametrize("bad", ["007d", "01fc", "ff7d", "00fd"])
def test_float16_signalling_nan_refused_without_warning(bad: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refused(Reason.NON_FINITE, bytes.fromhex("003c" + bad), {"name": "float16"}, 2)


def test_float16_decodes_largest_and_subnormal_halves() -> None:
    # 0x7bff = 65504 (largest finite half), 0x0001 = 2**-24 (smallest subnormal), 0x8000 = -0.0
    out = decode(bytes.fromhex("ff7b01000080"), {"name": "float16"}, 3)
    assert out.tolist() == [65504.0, 2.0**-24, -0.0]
    assert np.signbit(out[2])


# ---- quantised: scales and values -----------------------------------------------------------

QUANT = [("int8", bytes([1, 2, 3])), ("int4", bytes([0x9A, 0x8B]))]  # 3 valid q's each


@pytest.mark.parametrize(("name", "body"), QUANT)
@pytest.mark.parametrize("scale", [NAN, INF, struct.pack("<f", float("-inf")), FLT_MAX])
def test_non_finite_scale(name: str, body: bytes, scale: bytes) -> None:
    refused(Reason.NON_FINITE, scale + body, {"name": name}, 3)


@pytest.mark.parametrize(("name", "body"), QUANT)
@pytest.mark.parametrize("scale", [-1.0, -0.0])
def test_negative_scale(name: str, body: bytes, scale: float) -> None:
    refused(Reason.CODEC, struct.pack("<f", scale) + body, {"name": name}, 3)


@pytest.mark.parametrize(("name", "body"), QUANT)
def test_zero_scale_with_nonzero_values(name: str, body: bytes) -> None:
    refused(Reason.CODEC, struct.pack("<f", 0.0) + body, {"name": name}, 3)


@pytest.mark.parametrize(("name", "zeros"), [("int8", bytes(3)), ("int4", bytes([0x88, 0x88]))])
def test_zero_scale_on_all_zero_chunk_is_legal(name: str, zeros: bytes) -> None:
    assert decode(struct.pack("<f", 0.0) + zeros, {"name": name}, 3).tolist() == [0, 0, 0]


def test_zero_scale_checked_per_chunk() -> None:
    # chunk 2: first chunk legal (scale 1, q 1 1), second chunk scale 0 with q = 5
    spec = {"name": "int8", "chunk": 2}
    ok = struct.pack("<2f", 1.0, 0.0) + bytes([1, 1, 0])
    assert decode(ok, spec, 3).tolist() == [1.0, 1.0, 0.0]
    refused(Reason.CODEC, struct.pack("<2f", 1.0, 0.0) + bytes([1, 1, 5]), spec, 3)


def test_int8_minus_128_is_outside_the_symmetric_range() -> None:
    refused(Reason.CODEC, struct.pack("<f", 1.0) + bytes([0x80, 0, 0]), {"name": "int8"}, 3)


def test_int4_nibble_zero_is_outside_the_symmetric_range() -> None:
    refused(Reason.CODEC, struct.pack("<f", 1.0) + bytes([0x80, 0x88]), {"name": "int4"}, 3)


def test_int4_padding_nibble_must_be_zero_code() -> None:
    refused(Reason.CODEC, struct.pack("<f", 1.0) + bytes([0x88, 0x98]), {"name": "int4"}, 3)


# ---- topk indices ---------------------------------------------------------------------------

TOPK = {"name": "topk", "fraction": 0.4, "values": {"name": "float32"}}  # k = 2 of 5


def topk_payload(gaps: list[int], raw_index_bytes: bytes | None = None) -> bytes:
    index = encode_varints(np.array(gaps)) if raw_index_bytes is None else raw_index_bytes
    return index + struct.pack("<2f", 1.0, 2.0)


def test_topk_hand_built_payload_is_accepted() -> None:
    assert decode(topk_payload([1, 3]), TOPK, 5).tolist() == [0, 1, 0, 0, 2]


@pytest.mark.parametrize("gaps", [[5, 1], [0, 5], [4, 1], [7, 9], [2**34, 1]])
def test_topk_index_out_of_range(gaps: list[int]) -> None:
    refused(Reason.CODEC, topk_payload(gaps), TOPK, 5)


def test_topk_duplicate_index() -> None:
    refused(Reason.CODEC, topk_payload([2, 0]), TOPK, 5)


def test_topk_unsorted_index_via_wraparound_gap() -> None:
    # "3 then 1" would need gap -2; as an unsigned varint the nearest try is 2**32 - 2, which a
    # uint32 cumsum would wrap to 1. It must be refused, not wrapped.
    refused(Reason.CODEC, topk_payload([3, 2**32 - 2]), TOPK, 5)


@pytest.mark.parametrize(
    "index",
    [
        bytes([0x81, 0x00, 0x01]),  # over-long: 1 written in two bytes
        bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01]),  # six-byte varint
        bytes([0x01, 0x01, 0x01]),  # three varints where k = 2
        bytes([0x81, 0x81]),  # ends mid-varint
    ],
)
def test_topk_malformed_varints(index: bytes) -> None:
    refused(Reason.CODEC, topk_payload([], raw_index_bytes=index), TOPK, 5)


def test_topk_values_are_checked_by_their_codec() -> None:
    spec = {"name": "topk", "fraction": 0.4, "values": {"name": "int8"}}
    refused(Reason.NON_FINITE, bytes([1, 3]) + NAN + bytes([1, 2]), spec, 5)
    refused(Reason.NON_FINITE, bytes([1, 3]) + NAN[:0] + struct.pack("<2f", 1, float("inf")),
            TOPK, 5)  # fmt: skip


# ---- zlib stage -----------------------------------------------------------------------------

F32_ZLIB = {"name": "float32", "lossless": "zlib"}


def test_zlib_bomb_is_bounded() -> None:
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 kB
    assert len(bomb) < 100_000
    refused(Reason.CODEC, bomb, F32_ZLIB, 10)
    refused(Reason.CODEC, bomb, parse_codec_arg("topk:0.01+int8+zlib"), 1000)


def test_zlib_one_byte_too_many_is_refused() -> None:
    refused(Reason.CODEC, zlib.compress(bytes(41)), F32_ZLIB, 10)


def test_zlib_trailing_bytes() -> None:
    refused(Reason.CODEC, zlib.compress(bytes(40)) + b"\x00", F32_ZLIB, 10)


def test_zlib_truncated_and_corrupt() -> None:
    good = zlib.compress(bytes(40))
    refused(Reason.CODEC, good[:-3], F32_ZLIB, 10)
    refused(Reason.CODEC, b"\x78\x9c" + b"\xff" * 20, F32_ZLIB, 10)
    refused(Reason.CODEC, b"", F32_ZLIB, 10)


def test_zlib_of_a_non_finite_payload() -> None:
    refused(Reason.NON_FINITE, zlib.compress(NAN * 10), F32_ZLIB, 10)


# ---- encoding refuses bad input -------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_refuses_non_finite(spec: dict[str, Any], bad: float) -> None:
    x = sample(10)
    x[3] = bad
    with pytest.raises(ProtocolError) as info:
        encode(x, spec)
    assert info.value.reason is Reason.NON_FINITE


def test_encode_refuses_wrong_shape_and_dtype() -> None:
    with pytest.raises(ProtocolError) as info:
        encode(np.zeros((2, 3), dtype=np.float32), {"name": "float32"})
    assert info.value.reason is Reason.SHAPE
    with pytest.raises(ProtocolError) as info:
        encode(np.zeros(3, dtype=np.float64), {"name": "float32"})
    assert info.value.reason is Reason.DTYPE


@pytest.mark.parametrize("shorthand", ["float16", "topk:0.5+float16"])
def test_float16_refuses_values_beyond_its_range(shorthand: str) -> None:
    x = np.array([1.0, 70000.0], dtype=np.float32)
    with pytest.raises(ProtocolError) as info:
        encode(x, parse_codec_arg(shorthand))
    assert info.value.reason is Reason.CODEC


# ---- fuzz -----------------------------------------------------------------------------------


def _mutate(rng: np.random.Generator, payload: bytes) -> bytes:
    b = bytearray(payload)
    kind = int(rng.integers(6))
    if kind == 0:  # random bytes of a random size
        return rng.bytes(int(rng.integers(0, 2 * len(b) + 8)))
    if kind == 1 and b:  # flip a few bits
        for pos in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
            b[pos] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == 2 and b:  # overwrite a byte with an interesting value
        b[int(rng.integers(len(b)))] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF]))
        return bytes(b)
    if kind == 3:  # truncate
        return bytes(b[: int(rng.integers(0, len(b) + 1))])
    if kind == 4:  # extend
        return bytes(b) + rng.bytes(int(rng.integers(1, 9)))
    return rng.bytes(len(b))  # same size, random content


def test_fuzz_sees_only_protocol_errors() -> None:
    rng = np.random.default_rng(1234)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(5000):
        spec = SPECS[int(rng.integers(len(SPECS)))]
        n = int(rng.integers(0, 80))
        x = (rng.standard_t(3, size=n) * 10.0 ** rng.uniform(-4, 2)).astype(np.float32)
        payload = _mutate(rng, encode(x, spec))
        length = n if rng.random() < 0.9 else int(rng.integers(0, 200))
        try:
            y = decode(payload, spec, length)
        except ProtocolError as exc:
            assert exc.reason in (Reason.CODEC, Reason.SHAPE, Reason.NON_FINITE)
            outcomes["refused"] += 1
        else:
            assert y.dtype == np.float32
            assert y.shape == (length,)
            assert np.isfinite(y).all()
            outcomes["decoded"] += 1
    # both branches exercised: the fuzzer is neither trivially refused nor trivially accepted
    assert outcomes["refused"] > 2000
    assert outcomes["decoded"] > 100
