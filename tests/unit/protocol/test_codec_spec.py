"""Codec specs: validation of untrusted specs, and the CLI/TOML shorthand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protocol.codecs import format_codec_arg, parse_codec_arg, validate_spec
from protocol.errors import ConfigError, ProtocolError, Reason
from tests.unit.protocol.codec_cases import SHORTHANDS, SPECS


@pytest.mark.parametrize(
    ("spec", "normalised"),
    [
        ({"name": "float32"}, {"name": "float32", "lossless": "none"}),
        ({"name": "float16", "lossless": "zlib"}, {"name": "float16", "lossless": "zlib"}),
        ({"name": "int8"}, {"name": "int8", "chunk": 256, "lossless": "none"}),
        ({"name": "int4", "chunk": 32}, {"name": "int4", "chunk": 32, "lossless": "none"}),
        (
            {"name": "topk", "fraction": 1},
            {"name": "topk", "fraction": 1.0, "values": {"name": "float32"}, "lossless": "none"},
        ),
        (
            {"name": "topk", "fraction": 0.01, "values": {"name": "int8", "lossless": "none"}},
            {
                "name": "topk",
                "fraction": 0.01,
                "values": {"name": "int8", "chunk": 256},
                "lossless": "none",
            },
        ),
    ],
)
def test_validate_spec_normalises(spec: dict[str, Any], normalised: dict[str, Any]) -> None:
    assert validate_spec(spec) == normalised
    assert validate_spec(normalised) == normalised  # idempotent


@pytest.mark.parametrize(
    "spec",
    [
        None,
        "int8",
        [("name", "int8")],
        {},
        {"name": 8},
        {"name": "int16"},
        {"name": "zstd"},
        {"name": "float32", "chunk": 4},  # chunk is not a float32 key
        {"name": "int8", "scale": 1.0},
        {"name": "int8", "chunk": 0},
        {"name": "int8", "chunk": -4},
        {"name": "int8", "chunk": 2**24 + 1},
        {"name": "int8", "chunk": 16.0},
        {"name": "int8", "chunk": True},
        {"name": "int4", "chunk": "64"},
        {"name": "float32", "lossless": "zstd"},
        {"name": "float32", "lossless": None},
        {"name": "topk"},
        {"name": "topk", "fraction": 0.0},
        {"name": "topk", "fraction": -0.1},
        {"name": "topk", "fraction": 1.0000001},
        {"name": "topk", "fraction": float("nan")},
        {"name": "topk", "fraction": float("inf")},
        {"name": "topk", "fraction": "0.1"},
        {"name": "topk", "fraction": True},
        {"name": "topk", "fraction": 0.1, "values": {"name": "topk", "fraction": 0.5}},
        {"name": "topk", "fraction": 0.1, "values": {"name": "int8", "lossless": "zlib"}},
        {"name": "topk", "fraction": 0.1, "values": "int8"},
        {"name": "topk", "fraction": 0.1, "values": {"name": "int8", "chunk": 0}},
    ],
)
def test_validate_spec_refuses(spec: object) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_spec(spec)
    assert info.value.reason is Reason.CODEC


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("int8", {"name": "int8", "chunk": 256, "lossless": "none"}),
        ("int8:128", {"name": "int8", "chunk": 128, "lossless": "none"}),
        ("float16+zlib", {"name": "float16", "lossless": "zlib"}),
        (
            "topk:0.01+int8",
            {
                "name": "topk",
                "fraction": 0.01,
                "values": {"name": "int8", "chunk": 256},
                "lossless": "none",
            },
        ),
        (
            " TopK:0.1+int4:32+zlib ",
            {
                "name": "topk",
                "fraction": 0.1,
                "values": {"name": "int4", "chunk": 32},
                "lossless": "zlib",
            },
        ),
    ],
)
def test_parse_codec_arg(text: str, spec: dict[str, Any]) -> None:
    assert parse_codec_arg(text) == spec


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_format_is_the_inverse_of_parse(spec: dict[str, Any]) -> None:
    assert parse_codec_arg(format_codec_arg(spec)) == spec


@pytest.mark.parametrize(
    "text",
    ["", "int16", "int8:x", "int8:0", "float32:4", "topk", "topk:abc+int8", "topk:2+int8",
     "topk:0.1+topk:0.1", "topk:0.1+int8+float16", "int8+float16", "int8+zstd", "zlib"],
)  # fmt: skip
def test_parse_codec_arg_refuses_with_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="codec"):
        parse_codec_arg(text)


def test_spec_fuzz_sees_only_protocol_errors() -> None:
    rng = np.random.default_rng(7)
    pool: list[object] = [
        None, 0, -1, 2**40, 0.5, 1.5, float("nan"), True, "int8", "zlib", "topk", "none",
        "float16", [], {}, {"name": "int8"}, {"name": "topk", "fraction": 0.1},
    ]  # fmt: skip
    keys = ["name", "chunk", "fraction", "values", "lossless", "extra"]
    accepted = 0
    for _ in range(2000):
        spec = {k: pool[int(rng.integers(len(pool)))] for k in keys if rng.random() < 0.5}
        if rng.random() < 0.7:
            spec["name"] = str(rng.choice(["float32", "float16", "int8", "int4", "topk"]))
        try:
            out = validate_spec(spec)
        except ProtocolError as exc:
            assert exc.reason is Reason.CODEC
        else:
            assert validate_spec(out) == out
            accepted += 1
    assert accepted > 10
