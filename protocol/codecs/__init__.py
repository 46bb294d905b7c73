"""Codecs for flat float32 vectors: pure `encode` / `decode` pairs, no I/O.

    validate_spec(spec) -> dict              untrusted spec -> normalised (Reason.CODEC)
    encode(vec, spec) -> bytes               vec: (n,) float32, finite
    decode(data, spec, length) -> ndarray    (length,) float32; ProtocolError on any inconsistency
    parse_codec_arg(text) -> dict            CLI/TOML shorthand ("int8:128", "topk:0.01+int8+zlib")

One module per concept: `spec` (validation, shorthand), `floats` (float32, float16),
`quantized` (int8, int4), `topk`, `varint` (index coding), `lossless` (zlib), `api` (dispatch).
Each module's docstring states its binary layout and error bound.
"""

from protocol.codecs.api import MAX_LENGTH, decode, encode, payload_size_range
from protocol.codecs.spec import (
    DEFAULT_CHUNK,
    LOSSLESS,
    NAMES,
    VALUE_NAMES,
    format_codec_arg,
    parse_codec_arg,
    validate_spec,
)
from protocol.codecs.topk import topk_count

__all__ = [
    "DEFAULT_CHUNK",
    "LOSSLESS",
    "MAX_LENGTH",
    "NAMES",
    "VALUE_NAMES",
    "decode",
    "encode",
    "format_codec_arg",
    "parse_codec_arg",
    "payload_size_range",
    "topk_count",
    "validate_spec",
]
