"""Codecs for flat float32 vectors: pure `encode` / `decode` pairs, no I/O.

    validate_spec(spec) -> dict              untrusted spec -> normalised (Reason.CODEC)
    encode(vec, spec) -> bytes               vec: (n,) float32, finite
    decode(data, spec, length) -> ndarray    (length,) float32; ProtocolError on any inconsistency
    parse_codec_arg(text) -> dict            CLI/TOML shorthand ("int8:128", "topk:0.01+int8+zlib")

Binary layouts (little-endian, no header: spec and length travel beside the payload;
m = ceil(n / chunk); details and error bounds in each module's docstring):

    float32   n x <f4                                      exact
    float16   n x <f2                                      |err| <= max(|x| 2**-11, 2**-25)
    int8      m x <f4 scale | n x int8 (-127..127)         |err| <= scale / 2 per chunk
    int4      m x <f4 scale | ceil(n/2) bytes, 2 nibbles   |err| <= scale / 2 per chunk
              (q + 8, low nibble first, pad nibble 8)
    topk      k LEB128 index gaps | k values (value codec) dropped -> 0, kept -> value bound
    +zlib     zlib stream of any of the above              lossless; inflation bounded

One module per concept: `spec` (validation, shorthand), `floats` (float32, float16),
`quantized` (int8, int4), `topk`, `varint` (index coding), `lossless` (zlib), `api` (dispatch).
"""

from protocol.codecs.api import MAX_LENGTH, decode, decode_parts, encode, payload_size_range
from protocol.codecs.parts import DecodedParts
from protocol.codecs.spec import (
    DEFAULT_CHUNK,
    LOSSLESS,
    NAMES,
    VALUE_NAMES,
    format_codec_arg,
    parse_codec_arg,
    validate_spec,
)
from protocol.codecs.topk import IndexDecoder, topk_count

__all__ = [
    "DEFAULT_CHUNK",
    "LOSSLESS",
    "MAX_LENGTH",
    "NAMES",
    "VALUE_NAMES",
    "DecodedParts",
    "IndexDecoder",
    "decode",
    "decode_parts",
    "encode",
    "format_codec_arg",
    "parse_codec_arg",
    "payload_size_range",
    "topk_count",
    "validate_spec",
]
