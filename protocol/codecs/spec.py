"""Codec specs: plain data that travels in a message, validated and normalised here.

A spec is a small dict. Normalised forms (what `validate_spec` returns):

    {"name": "float32", "lossless": "none"}
    {"name": "float16", "lossless": "none"}
    {"name": "int8", "chunk": 256, "lossless": "none"}
    {"name": "int4", "chunk": 64, "lossless": "none"}
    {"name": "topk", "fraction": 0.01, "values": {"name": "int8", "chunk": 256}, "lossless": "zlib"}

Rules: unknown names and unknown keys are refused; `chunk` is an int in [1, 2**24] (defaults 256
for int8, 64 for int4); `fraction` is a finite number in (0, 1]; `values` of a topk is one of the
four value codecs (default float32) -- never topk, and never with its own lossless stage (the
lossless stage wraps the whole payload, so it lives only at the top level). Every refusal is a
`ProtocolError(Reason.CODEC)`, because specs arrive from the network.

`parse_codec_arg` reads the CLI/TOML shorthand (`int8`, `int8:128`, `float16+zlib`,
`topk:0.01+int8`, `topk:0.1+float16+zlib`) and `format_codec_arg` writes it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from protocol.errors import ConfigError, ProtocolError, Reason

__all__ = [
    "DEFAULT_CHUNK",
    "LOSSLESS",
    "MAX_CHUNK",
    "NAMES",
    "VALUE_NAMES",
    "format_codec_arg",
    "parse_codec_arg",
    "validate_spec",
]

VALUE_NAMES = ("float32", "float16", "int8", "int4")  # codecs that encode every element
NAMES = (*VALUE_NAMES, "topk")
LOSSLESS = ("none", "zlib")  # zstd is not in the 3.11 stdlib; protocol/ stays stdlib+numpy
DEFAULT_CHUNK = {"int8": 256, "int4": 64}  # one float32 scale per chunk: 1.6% / 12.5% overhead
MAX_CHUNK = 1 << 24  # far above any useful chunk; bounds what a hostile spec can ask for

_KEYS = {
    "float32": frozenset({"name", "lossless"}),
    "float16": frozenset({"name", "lossless"}),
    "int8": frozenset({"name", "chunk", "lossless"}),
    "int4": frozenset({"name", "chunk", "lossless"}),
    "topk": frozenset({"name", "fraction", "values", "lossless"}),
}


def _fail(detail: str) -> ProtocolError:
    return ProtocolError(Reason.CODEC, detail)


def _chunk(raw: Mapping[str, Any], name: str) -> int:
    chunk = raw.get("chunk", DEFAULT_CHUNK[name])
    # bool is an int subclass; True is not a chunk size
    if not isinstance(chunk, int) or isinstance(chunk, bool):
        raise _fail(f"{name} chunk must be an int, got {type(chunk).__name__}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise _fail(f"{name} chunk {chunk} outside [1, {MAX_CHUNK}]")
    return chunk


def _fraction(raw: Mapping[str, Any]) -> float:
    if "fraction" not in raw:
        raise _fail("topk needs a fraction")
    frac = raw["fraction"]
    if not isinstance(frac, int | float) or isinstance(frac, bool):
        raise _fail(f"topk fraction must be a number, got {type(frac).__name__}")
    frac = float(frac)
    if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
        raise _fail(f"topk fraction {frac!r} outside (0, 1]")
    return frac


def _validate(raw: object, *, nested: bool) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _fail(f"codec spec must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or name not in NAMES:
        raise _fail(f"unknown codec name {name!r}; known: {', '.join(NAMES)}")
    if nested and name == "topk":
        raise _fail("topk values cannot themselves be topk")
    extra = set(raw) - _KEYS[name]
    if extra:
        raise _fail(f"unknown keys for {name}: {sorted(map(str, extra))}")
    lossless = raw.get("lossless", "none")
    if not isinstance(lossless, str) or lossless not in LOSSLESS:
        raise _fail(f"unknown lossless stage {lossless!r}; known: {', '.join(LOSSLESS)}")
    if nested and lossless != "none":
        raise _fail("a lossless stage belongs on the top-level spec, not on topk values")

    out: dict[str, Any] = {"name": name}
    if name in DEFAULT_CHUNK:
        out["chunk"] = _chunk(raw, name)
    elif name == "topk":
        out["fraction"] = _fraction(raw)
        out["values"] = _validate(raw.get("values", {"name": "float32"}), nested=True)
    if not nested:
        out["lossless"] = lossless
    return out


def validate_spec(spec: object) -> dict[str, Any]:
    """Untrusted spec -> normalised spec (fresh dict, defaults filled). ProtocolError(CODEC)."""
    return _validate(spec, nested=False)


def _parse_value(token: str, text: str) -> dict[str, Any]:
    name, sep, param = token.partition(":")
    spec: dict[str, Any] = {"name": name}
    if sep:
        if name not in DEFAULT_CHUNK:
            raise ConfigError(f"codec {text!r}: {name} takes no ':' parameter")
        try:
            spec["chunk"] = int(param)
        except ValueError as exc:
            raise ConfigError(f"codec {text!r}: chunk {param!r} is not an integer") from exc
    return spec


def parse_codec_arg(text: str) -> dict[str, Any]:
    """CLI/TOML shorthand -> normalised spec. Raises ConfigError naming the text.

    Grammar: `VALUE | topk:FRACTION[+VALUE]`, optionally followed by `+zlib` or `+none`,
    where VALUE is `float32 | float16 | int8[:CHUNK] | int4[:CHUNK]`.
    """
    tokens = [t.strip().lower() for t in text.split("+")]
    lossless = "none"
    if len(tokens) > 1 and tokens[-1] in LOSSLESS:
        lossless = tokens.pop()
    head, *rest = tokens
    spec: dict[str, Any]
    if head.startswith("topk"):
        _, sep, frac = head.partition(":")
        if not sep:
            raise ConfigError(f"codec {text!r}: topk needs a fraction, e.g. topk:0.01+int8")
        try:
            fraction = float(frac)
        except ValueError as exc:
            raise ConfigError(f"codec {text!r}: fraction {frac!r} is not a number") from exc
        if len(rest) > 1:
            raise ConfigError(f"codec {text!r}: topk takes one value codec")
        values = _parse_value(rest[0], text) if rest else {"name": "float32"}
        spec = {"name": "topk", "fraction": fraction, "values": values}
    else:
        if rest:
            raise ConfigError(f"codec {text!r}: only topk takes a value codec after '+'")
        spec = _parse_value(head, text)
    spec["lossless"] = lossless
    try:
        return validate_spec(spec)
    except ProtocolError as exc:
        raise ConfigError(f"codec {text!r}: {exc.detail}") from exc


def format_codec_arg(spec: Mapping[str, Any]) -> str:
    """Normalised spec -> shorthand (inverse of `parse_codec_arg`), for logs and tables."""
    norm = validate_spec(spec)

    def value(s: Mapping[str, Any]) -> str:
        return f"{s['name']}:{s['chunk']}" if "chunk" in s else str(s["name"])

    text = (
        f"topk:{norm['fraction']!r}+{value(norm['values'])}"
        if norm["name"] == "topk"
        else value(norm)
    )
    return text + ("+zlib" if norm["lossless"] == "zlib" else "")
