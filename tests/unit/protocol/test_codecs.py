"""One suite run against every codec configuration (STYLE #12), plus hand-computed examples."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.codecs import decode, encode, parse_codec_arg, topk_count
from tests.unit.protocol.codec_cases import (
    F16_MAX,
    SHORTHANDS,
    SPECS,
    assert_within_bound,
    inner_payload,
    uses_float16,
)

FULL_RANGE = st.floats(width=32, allow_nan=False, allow_infinity=False)
F16_RANGE = st.floats(-F16_MAX, F16_MAX, width=32)
# trained-model-like magnitudes, where the interesting rounding happens
SMALL = st.floats(-0.0625, 0.0625, width=32)


def vectors(spec: dict[str, Any]) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    elements = F16_RANGE if uses_float16(spec) else st.one_of(FULL_RANGE, SMALL)
    return hnp.arrays(np.float32, st.integers(0, 300), elements=elements)


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_within_stated_bound(spec: dict[str, Any], data: st.DataObject) -> None:
    x = data.draw(vectors(spec))
    payload = encode(x, spec)
    y = decode(payload, spec, x.size)
    assert_within_bound(x, y, spec, inner_payload(payload, spec))
    assert encode(x, spec) == payload  # deterministic: same vector, same bytes


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, 257, 4099])
def test_edge_lengths_and_realistic_values(spec: dict[str, Any], n: int) -> None:
    x = (np.random.default_rng(n).standard_t(3, size=n) * 1e-3).astype(np.float32)
    payload = encode(x, spec)
    y = decode(payload, spec, n)
    assert_within_bound(x, y, spec, inner_payload(payload, spec))


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_all_zero_vector_decodes_to_zeros(spec: dict[str, Any]) -> None:
    x = np.zeros(100, dtype=np.float32)
    y = decode(encode(x, spec), spec, 100)
    assert np.array_equal(y, x)


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_extremes_round_trip(spec: dict[str, Any]) -> None:
    top = F16_MAX if uses_float16(spec) else float(np.finfo(np.float32).max)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    x = np.array([top, -top, tiny, -tiny, 0.0, -0.0, 1e-40, 3.0], dtype=np.float32)
    payload = encode(x, spec)
    assert_within_bound(x, decode(payload, spec, x.size), spec, inner_payload(payload, spec))


# ---- hand-computed examples -------------------------------------------------------------------


def test_float32_bytes_by_hand() -> None:
    x = np.array([1.0, -0.5, 0.25], dtype=np.float32)
    assert encode(x, {"name": "float32"}) == struct.pack("<3f", 1.0, -0.5, 0.25)


def test_float16_bytes_by_hand() -> None:
    # 1.0 = 0x3C00, -0.5 = 0xB800, 0.25 = 0x3400; 1/3 rounds to 0x3555 = 0.333251953125
    x = np.array([1.0, -0.5, 0.25, 1 / 3], dtype=np.float32)
    payload = encode(x, {"name": "float16"})
    assert payload == bytes.fromhex("003c00b800345535")
    assert decode(payload, {"name": "float16"}, 4)[3] == np.float32(0.333251953125)


def test_int8_exact_scale_by_hand() -> None:
    # max|x| = 127 -> scale 1.0; -63.5 rounds half-to-even to -64; 0.25 rounds to 0
    x = np.array([127.0, -63.5, 0.25], dtype=np.float32)
    payload = encode(x, {"name": "int8"})
    assert payload == struct.pack("<f", 1.0) + bytes([127, 256 - 64, 0])
    assert decode(payload, {"name": "int8"}, 3).tolist() == [127.0, -64.0, 0.0]


def test_int8_scale_rounds_up_so_nothing_clips() -> None:
    # float32(1/127) = 0x3C010204 is a hair below 1/127 (127 * it < 1), so the scale is the
    # next float up, 0x3C010205 (> 1/127): q = [127, -63.4999.. -> -63, 31.7499.. -> 32]
    x = np.array([1.0, -0.5, 0.25], dtype=np.float32)
    payload = encode(x, {"name": "int8", "chunk": 256})
    assert payload == bytes.fromhex("0502013c") + bytes([127, 256 - 63, 32])
    s = struct.unpack("<f", bytes.fromhex("0502013c"))[0]
    assert 127 * s >= 1.0 > 127 * struct.unpack("<f", bytes.fromhex("0402013c"))[0]
    y = decode(payload, {"name": "int8"}, 3)
    assert np.allclose(y, [127 * s, -63 * s, 32 * s], rtol=0, atol=1e-7)


def test_int8_chunks_have_their_own_scale() -> None:
    # chunk 2: [254, -127] -> scale 2.0 (q 127, -63.5 -> -64 half-to-even); [63.5] -> scale 0.5
    x = np.array([254.0, -127.0, 63.5], dtype=np.float32)
    payload = encode(x, {"name": "int8", "chunk": 2})
    assert payload == struct.pack("<2f", 2.0, 0.5) + bytes([127, 256 - 64, 127])
    assert decode(payload, {"name": "int8", "chunk": 2}, 3).tolist() == [254.0, -128.0, 63.5]


def test_int4_bytes_by_hand() -> None:
    # max|x| = 7 -> scale 1.0; q = [7, -3, 2] -> nibbles 15, 5, 10, padding 8
    x = np.array([7.0, -3.2, 1.6], dtype=np.float32)
    payload = encode(x, {"name": "int4"})
    assert payload == struct.pack("<f", 1.0) + bytes([0x5F, 0x8A])
    assert decode(payload, {"name": "int4"}, 3).tolist() == [7.0, -3.0, 2.0]


def test_topk_bytes_by_hand() -> None:
    # fraction 0.4 of 5 -> k = 2: indices 1 and 4 (|-9|, |7|); gaps 1, 3; values as float32
    x = np.array([0.1, -9.0, 0.2, -0.3, 7.0], dtype=np.float32)
    spec = {"name": "topk", "fraction": 0.4, "values": {"name": "float32"}}
    payload = encode(x, spec)
    assert payload == bytes([1, 3]) + struct.pack("<2f", -9.0, 7.0)
    assert decode(payload, spec, 5).tolist() == [0.0, -9.0, 0.0, 0.0, 7.0]


def test_topk_multibyte_varint_gap() -> None:
    # index 300 -> gap 300 = 0b10_0101100 -> LEB128 0xAC 0x02
    x = np.zeros(400, dtype=np.float32)
    x[300] = 5.0
    spec = {"name": "topk", "fraction": 0.001, "values": {"name": "float32"}}
    payload = encode(x, spec)
    assert payload == bytes([0xAC, 0x02]) + struct.pack("<f", 5.0)
    assert decode(payload, spec, 400)[300] == 5.0


@pytest.mark.parametrize(
    ("fraction", "n", "k"),
    [(0.01, 0, 0), (0.01, 1, 1), (0.01, 300, 3), (0.01, 149, 1), (0.01, 150, 2), (1.0, 7, 7)],
)
def test_topk_count_by_hand(fraction: float, n: int, k: int) -> None:
    # round half up of fraction * n, at least 1 when n > 0 (0.01 * 300 is 3.0000000000000004)
    assert topk_count(fraction, n) == k


def test_zlib_stage_is_plain_zlib_of_the_inner_payload() -> None:
    x = np.zeros(1000, dtype=np.float32)
    inner = encode(x, {"name": "int8"})
    outer = encode(x, parse_codec_arg("int8+zlib"))
    assert zlib.decompress(outer) == inner
    assert len(outer) < len(inner) // 10


@pytest.mark.parametrize(
    ("shorthand", "n", "size"),
    [("float32", 1000, 4000), ("float16", 1000, 2000), ("int8:256", 1000, 16 + 1000),
     ("int4:64", 1001, 64 + 501), ("topk:0.01+int8:256", 1000, None)],
)  # fmt: skip
def test_payload_sizes_by_hand(shorthand: str, n: int, size: int | None) -> None:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    payload = encode(x, parse_codec_arg(shorthand))
    if size is None:  # 10 kept: 10 gap varints of 1..2 bytes + one scale + 10 int8
        assert 10 + 4 + 10 <= len(payload) <= 20 + 4 + 10
    else:
        assert len(payload) == size
