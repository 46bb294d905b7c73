"""ClientUpdate schemas 2 and 3: a compact header, then the codec payload raw to the end.

Schema 1 (protocol/messages.py) spells every field name and the 64-hex-character model id, about
290 bytes around a top-k payload of a few hundred. Schema 2 keeps the same fields:

    message = header | payload
    header  = msgpack array [schema, model_digest, base_version, device_id, seq, num_samples,
                             local_steps, codec, length, metrics]
        model_digest  bin 32    the model id (sha256 of the manifest) as raw bytes
        codec         array     [code, params...] (below)
        metrics       map       well-known names as small ints (loss=0, train_s=1, partial=2,
                                accuracy=3), others by name; values float32 or int
    payload = the codec's bytes, everything after the header (never copied on decode)

A top-2% + int8 update of a 9,610-parameter model with no metrics has a 57-byte header; the agent's
three metrics add 16. Metric values travel as float32 (they are reports, never aggregated).

Codec array, schema 2: [code, params...], code = value codec (0 float32, 1 float16, 2 int8,
3 int4) | 4 if topk | 8 if zlib. Schema 3 has the same header but names the value codec, so a
codec added to protocol/codecs needs no wire change: [value codec name, flags (1 topk, 2 zlib),
params...]. Params: the topk fraction (an int in parts per million when that is exact, else a
float), then the chunk of a quantised value codec when it is not the default. The expanded dict
goes through `codecs.validate_spec`, so every spec rule still applies. An update is written as
schema 2 when its value codec has a code there (every codec today: the same bytes as before),
else as schema 3; both are read.

Decoding is cheapest-first like schema 1: size, msgpack structure of the header only (bounded: at
most `MAX_HEADER_BYTES` are parsed), schema by name, field types and ranges, the codec; the
payload's own checks (size against spec and length, structure, finiteness) run where the delta is
decoded against the manifest. `decode_any_update` accepts schema 1 (a map) during its deprecation
period and schema 2 (an array); anything else is refused with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from protocol import codecs
from protocol.errors import ProtocolError, Reason
from protocol.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ClientUpdate,
    EncodedVector,
    decode_update,
)
from protocol.topics import validate_device_id

__all__ = [
    "COMPACT_SCHEMA",
    "LEGACY_SCHEMA",
    "MAX_HEADER_BYTES",
    "NAMED_CODEC_SCHEMA",
    "decode_any_update",
    "decode_update_compact",
    "encode_codec_compact",
    "encode_update_compact",
    "header_size",
    "is_legacy_update",
]

COMPACT_SCHEMA = 2
NAMED_CODEC_SCHEMA = 3  # schema 2's header with the value codec by name (any codec)
LEGACY_SCHEMA = 1  # accepted by decode_any_update during its deprecation period
MAX_HEADER_BYTES = 4096  # 64 metrics with short names fit; a header is never parsed past this
_FIELDS = 10
_U63 = (1 << 63) - 1
_MAX_LENGTH = 1 << 30
_MAX_METRICS = 64
_MAX_NAME = 64
_VALUE_CODES = ("float32", "float16", "int8", "int4")
_TOPK, _ZLIB = 1, 2  # codec flags (schema 2: shifted left by 2, above the value code)
_MAX_CODEC_NAME = 32
_PPM = 1_000_000
METRIC_CODES = {"loss": 0, "train_s": 1, "partial": 2, "accuracy": 3}
_METRIC_NAMES = {code: name for name, code in METRIC_CODES.items()}
_MAPS = frozenset({*range(0x80, 0x90), 0xDE, 0xDF})
_ARRAYS = frozenset({*range(0x90, 0xA0), 0xDC, 0xDD})


def _fail(reason: Reason, detail: str) -> ProtocolError:
    return ProtocolError(reason, f"client_update: {detail}")


# --- codec spec ------------------------------------------------------------------------------


def encode_codec_compact(spec: Mapping[str, Any], schema: int = COMPACT_SCHEMA) -> list[int | str]:
    """The codec array of `schema` (2: the value codec's code, 3: its name) for `spec`."""
    norm = codecs.validate_spec(dict(spec))
    value = norm["values"] if norm["name"] == "topk" else norm
    flags = (_TOPK if norm["name"] == "topk" else 0) | (_ZLIB if norm["lossless"] == "zlib" else 0)
    out: list[int | str]
    if schema == COMPACT_SCHEMA:
        out = [_VALUE_CODES.index(value["name"]) | flags << 2]
    else:
        out = [value["name"], flags]
    if norm["name"] == "topk":
        frac = float(norm["fraction"])
        ppm = round(frac * _PPM)
        out.append(ppm if ppm / _PPM == frac else repr(frac))  # repr: exact float round trip
    if "chunk" in value and value["chunk"] != codecs.DEFAULT_CHUNK[value["name"]]:
        out.append(int(value["chunk"]))
    return out


def _decode_codec(raw: object, schema: int) -> dict[str, Any]:
    fixed = 1 if schema == COMPACT_SCHEMA else 2  # items before the params
    if not isinstance(raw, list) or not fixed <= len(raw) <= fixed + 2:
        raise _fail(Reason.CODEC, f"codec must be an array of {fixed} to {fixed + 2} items")
    if schema == COMPACT_SCHEMA:
        code = raw[0]
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < 16:
            raise _fail(Reason.CODEC, f"codec code {code!r} outside 0..15")
        name, flags = _VALUE_CODES[code & 3], code >> 2
    else:
        name, flags = raw[0], raw[1]
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_CODEC_NAME:
            raise _fail(Reason.CODEC, "value codec name must be a short string")
        if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 4:
            raise _fail(Reason.CODEC, f"codec flags {flags!r} outside 0..3")
    rest = list(raw[fixed:])
    value: dict[str, Any] = {"name": name}
    spec: dict[str, Any] = value
    if flags & _TOPK:
        if not rest:
            raise _fail(Reason.CODEC, "topk codec without a fraction")
        frac = rest.pop(0)
        if isinstance(frac, str) and len(frac) <= 32:
            try:
                frac = float(frac)  # validate_spec refuses nan, inf and anything outside (0, 1]
            except ValueError:
                raise _fail(Reason.CODEC, f"topk fraction {frac!r} is not a number") from None
        elif isinstance(frac, bool) or not isinstance(frac, int):
            raise _fail(Reason.CODEC, f"topk fraction is {type(frac).__name__}")
        spec = {"name": "topk", "fraction": frac / _PPM if isinstance(frac, int) else frac}
        spec["values"] = value
    if value["name"] in codecs.DEFAULT_CHUNK and rest:
        value["chunk"] = rest.pop(0)
    if rest:
        raise _fail(Reason.CODEC, f"codec array has {len(rest)} unexpected item(s)")
    spec["lossless"] = "zlib" if flags & _ZLIB else "none"
    return codecs.validate_spec(spec)  # an unknown value codec name is refused here


# --- metrics ---------------------------------------------------------------------------------


def _metric_value(v: float) -> int | float:
    """Integral values as ints (1 byte for flags), others float32 (packed single)."""
    if not math.isfinite(v):
        raise _fail(Reason.NON_FINITE, "a metric is not finite")
    if v.is_integer() and abs(v) < 2**31:
        return int(v)
    return float(np.float32(v)) if abs(v) < 3e38 else math.copysign(3e38, v)


def _encode_metrics(metrics: Mapping[str, float]) -> dict[int | str, int | float]:
    return {METRIC_CODES.get(k, k): _metric_value(float(v)) for k, v in metrics.items()}


def _decode_metrics(raw: object) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise _fail(Reason.FIELD, "metrics must be a map")
    if len(raw) > _MAX_METRICS:
        raise _fail(Reason.FIELD, f"more than {_MAX_METRICS} metrics")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(key, int) and not isinstance(key, bool) and key in _METRIC_NAMES:
            name = _METRIC_NAMES[key]
        elif isinstance(key, str) and 0 < len(key) <= _MAX_NAME:
            name = key
        else:
            raise _fail(Reason.FIELD, f"metric key {str(key)[:40]!r} unknown or too long")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(Reason.FIELD, f"metric {name!r} is not a number")
        if not math.isfinite(value):
            raise _fail(Reason.NON_FINITE, f"metric {name!r} is not finite")
        if name in out:
            raise _fail(Reason.FIELD, f"metric {name!r} given twice")
        out[name] = float(value)
    return out


# --- the message -----------------------------------------------------------------------------


def _model_digest(model_id: str) -> bytes:
    if len(model_id) != 64 or model_id != model_id.lower():
        raise _fail(Reason.UNKNOWN_MODEL, "schema 2 needs a sha256 model id (64 lowercase hex)")
    try:
        return bytes.fromhex(model_id)
    except ValueError:
        raise _fail(Reason.UNKNOWN_MODEL, "model id is not hexadecimal") from None


def encode_update_compact(update: ClientUpdate, schema: int | None = None) -> bytes:
    """Schema 2 bytes of `update` (its payload appended raw, not copied into msgpack), or
    schema 3 when its value codec has no schema 2 code (or when `schema` asks for it)."""
    if schema is None:
        codec = update.delta.codec
        value = codec["values"] if codec.get("name") == "topk" else codec
        schema = COMPACT_SCHEMA if value.get("name") in _VALUE_CODES else NAMED_CODEC_SCHEMA
    if schema not in (COMPACT_SCHEMA, NAMED_CODEC_SCHEMA):
        raise ValueError(f"schema {schema}: the compact header is schema 2 or 3")
    header = [
        schema,
        _model_digest(update.model_id),
        update.base_version,
        update.device_id,
        update.seq,
        update.num_samples,
        update.local_steps,
        encode_codec_compact(update.delta.codec, schema),
        update.delta.length,
        _encode_metrics(update.metrics),
    ]
    packed: bytes = msgpack.packb(header, use_bin_type=True, use_single_float=True)
    return packed + bytes(update.delta.data)


def header_size(data: bytes) -> int:
    """Bytes of a schema 2 or 3 message's header (what precedes the codec payload)."""
    return _read_header(memoryview(data))[1]


def _read_header(view: memoryview) -> tuple[list[Any], int]:
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=False,  # metric keys are small ints or names; checked in _decode_metrics
        max_buffer_size=MAX_HEADER_BYTES,
        max_bin_len=64,
        max_str_len=MAX_HEADER_BYTES,
        max_array_len=_FIELDS,
        max_map_len=_MAX_METRICS,
        max_ext_len=0,
    )
    unpacker.feed(view[:MAX_HEADER_BYTES])
    try:
        header = unpacker.unpack()
    except msgpack.OutOfData:
        raise _fail(
            Reason.MALFORMED, f"header truncated or over {MAX_HEADER_BYTES} bytes"
        ) from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _fail(Reason.MALFORMED, f"header is not msgpack ({exc})") from exc
    if not isinstance(header, list):
        raise _fail(Reason.MALFORMED, "header is not an array")
    return header, unpacker.tell()


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(Reason.FIELD, f"{name} is {type(value).__name__}, expected int")
    if not low <= value <= high:
        raise _fail(Reason.FIELD, f"{name}={value} outside [{low}, {high}]")
    return value


def decode_update_compact(
    data: bytes | memoryview, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientUpdate:
    """Schema 2 or 3 bytes -> ClientUpdate whose `delta.data` is a view into `data` (no copy)."""
    view = memoryview(data).cast("B")
    if len(view) > max_bytes:
        raise _fail(Reason.OVERSIZE, f"{len(view)} bytes > limit {max_bytes}")
    header, end = _read_header(view)
    schema = header[0] if header else None
    if schema not in (COMPACT_SCHEMA, NAMED_CODEC_SCHEMA) or isinstance(schema, bool):
        raise _fail(Reason.SCHEMA, f"schema {schema!r} unsupported, want 2 or 3")
    if len(header) != _FIELDS:
        raise _fail(
            Reason.MALFORMED, f"schema {schema} header has {len(header)} fields, want {_FIELDS}"
        )
    _, digest, base, device, seq, samples, steps, codec, length, metrics = header
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise _fail(Reason.FIELD, "model digest must be 32 bytes")
    if not isinstance(device, str):
        raise _fail(Reason.FIELD, f"device_id is {type(device).__name__}, expected str")
    spec = _decode_codec(codec, schema)
    return ClientUpdate(
        model_id=digest.hex(),
        base_version=_int(base, "base_version", 0, _U63),
        device_id=validate_device_id(device),
        seq=_int(seq, "seq", 0, _U63),
        num_samples=_int(samples, "num_samples", -_U63, _U63),  # admission bounds it
        local_steps=_int(steps, "local_steps", 0, _U63),
        delta=EncodedVector(spec, view[end:], _int(length, "length", 0, _MAX_LENGTH)),
        metrics=_decode_metrics(metrics),
    )


def is_legacy_update(data: bytes | memoryview) -> bool:
    """Whether an update is schema 1 (a msgpack map), from its first byte alone."""
    return bool(len(data)) and data[0] in _MAPS


def decode_any_update(
    data: bytes | memoryview, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, legacy: bool = True
) -> ClientUpdate:
    """Schema 2 or 3 (an array header), or schema 1 (a map; deprecated, refused by name when
    `legacy` is off) -> ClientUpdate."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail(Reason.MALFORMED, f"payload is {type(data).__name__}")
    if len(data) > max_bytes:
        raise _fail(Reason.OVERSIZE, f"{len(data)} bytes > limit {max_bytes}")
    if not len(data):
        raise _fail(Reason.MALFORMED, "empty payload")
    first = data[0]
    if first in _ARRAYS:
        return decode_update_compact(data, max_bytes)
    if first in _MAPS:
        if not legacy:
            raise _fail(
                Reason.SCHEMA,
                "schema 1 (the map header) is no longer accepted here: update the agent (it "
                "sends schema 2 since issue 17)",
            )
        return decode_update(bytes(data), max_bytes)
    raise _fail(Reason.MALFORMED, f"neither a schema 2 array nor a schema 1 map (0x{first:02x})")
