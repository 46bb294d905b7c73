"""The value codecs (every element encoded) behind one small interface, by name.

A value codec is a class of static/class methods (no state):

    size(spec, n) -> int                      exact payload bytes for n elements
    encode(x, spec) -> bytes                  x: (n,) float32, finite (checked by the caller)
    decode(buf, spec, n) -> (n,) float32      buf: exactly size(spec, n) bytes (checked by caller)

`topk` is not a value codec: it keeps a subset and hands the kept values to one of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from protocol.codecs.floats import Float16, Float32
from protocol.codecs.quantized import Int4, Int8

__all__ = ["VALUE_CODECS", "ValueCodec"]


class ValueCodec(Protocol):
    @classmethod
    def size(cls, spec: Mapping[str, Any], n: int) -> int: ...

    @classmethod
    def encode(cls, x: npt.NDArray[np.float32], spec: Mapping[str, Any]) -> bytes: ...

    @classmethod
    def decode(
        cls, buf: memoryview, spec: Mapping[str, Any], n: int
    ) -> npt.NDArray[np.float32]: ...


VALUE_CODECS: dict[str, type[ValueCodec]] = {
    "float32": Float32,
    "float16": Float16,
    "int8": Int8,
    "int4": Int4,
}
