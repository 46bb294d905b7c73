"""Models for the device's own applications: the latest global model and a personal one.

    <state_dir>/models/global.onnx     + global.json     {"version", "accuracy", "saved_at", ...}
    <state_dir>/models/personal.onnx   + personal.json   (when [personal] enabled)

Each .onnx is a complete, self-contained inference model that a local application opens with a
plain ``onnxruntime.InferenceSession`` - no fleetlearn, no training API. Files are replaced
atomically (temp, fsync, rename): an app that reopens the file sees the old model or the new one.
The JSON is written after its model, so its version never names a model that is not there yet.

How the file is built without the `onnx` package (too big for a device, and not needed): the
artifacts' ``inference.onnx`` is a protobuf ``ModelProto``; we walk its wire format, find each
graph initializer named like a manifest parameter, and replace its payload with our weights as
``raw_data``. Everything else (graph, opsets, metadata) is copied byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from agent.fsio import atomic_write_bytes, atomic_write_json
from protocol.errors import DataError
from protocol.manifest import Manifest

__all__ = ["ModelKind", "PersonalModels", "patch_initializers"]

_GRAPH = 7  # ModelProto.graph
_INITIALIZER = 5  # GraphProto.initializer
_DIMS, _DATA_TYPE, _FLOAT_DATA, _NAME, _RAW_DATA = 1, 2, 4, 8, 9  # TensorProto fields
_FLOAT = 1  # TensorProto.DataType.FLOAT


class ModelKind(StrEnum):
    GLOBAL = "global"
    PERSONAL = "personal"


# -- protobuf wire format (just enough) ------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DataError("inference.onnx: truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, pos


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    raw: bytes  # the whole field, key included
    value: bytes  # length-delimited payload (wire type 2), else the raw value bytes


def _fields(buf: bytes) -> Iterator[_Field]:
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            value = buf[start:pos]
        elif wire == 1:
            pos += 8
            value = buf[pos - 8 : pos]
        elif wire == 5:
            pos += 4
            value = buf[pos - 4 : pos]
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        else:
            raise DataError(f"inference.onnx: unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise DataError("inference.onnx: truncated field")
        yield _Field(number, wire, buf[start:pos], value)


def _len_field(number: int, payload: bytes) -> bytes:
    return _enc_varint(number << 3 | 2) + _enc_varint(len(payload)) + payload


def _tensor_dims(tensor: bytes) -> tuple[str, tuple[int, ...], int]:
    name, dims, dtype = "", [], -1
    for f in _fields(tensor):
        if f.number == _NAME and f.wire == 2:
            name = f.value.decode("utf-8", "replace")
        elif f.number == _DIMS and f.wire == 0:
            dims.append(_varint(f.raw, len(_enc_varint(_DIMS << 3)))[0])
        elif f.number == _DIMS and f.wire == 2:  # packed
            pos = 0
            while pos < len(f.value):
                d, pos = _varint(f.value, pos)
                dims.append(d)
        elif f.number == _DATA_TYPE and f.wire == 0:
            dtype = _varint(f.raw, 1)[0]
    return name, tuple(dims), dtype


def patch_initializers(model: bytes, tensors: dict[str, np.ndarray]) -> bytes:
    """Replace the named float initializers of a serialized ModelProto. All names must be found."""
    found: set[str] = set()

    def patch_tensor(tensor: bytes) -> bytes:
        name, dims, dtype = _tensor_dims(tensor)
        if name not in tensors:
            return tensor
        value = tensors[name]
        if dtype != _FLOAT or tuple(value.shape) != dims:
            raise DataError(
                f"inference.onnx: initializer {name!r} is type {dtype} {dims}, "
                f"weights are float32 {value.shape}"
            )
        found.add(name)
        kept = b"".join(f.raw for f in _fields(tensor) if f.number not in (_FLOAT_DATA, _RAW_DATA))
        raw = np.ascontiguousarray(value, dtype="<f4").tobytes()
        return kept + _len_field(_RAW_DATA, raw)

    def patch_graph(graph: bytes) -> bytes:
        return b"".join(
            _len_field(_INITIALIZER, patch_tensor(f.value))
            if f.number == _INITIALIZER and f.wire == 2
            else f.raw
            for f in _fields(graph)
        )

    out = b"".join(
        _len_field(_GRAPH, patch_graph(f.value)) if f.number == _GRAPH and f.wire == 2 else f.raw
        for f in _fields(model)
    )
    missing = sorted(set(tensors) - found)
    if missing:
        raise DataError(f"inference.onnx: no float initializer named {missing[0]!r}")
    return out


class PersonalModels:
    """Writes global/personal inference models built from flat weight vectors."""

    def __init__(self, folder: Path, inference_template: Path, manifest: Manifest) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._manifest = manifest
        try:
            self._template = inference_template.read_bytes()
        except OSError as exc:
            raise DataError(f"{inference_template}: cannot read: {exc.strerror}") from exc

    def model_path(self, kind: ModelKind) -> Path:
        return self.folder / f"{kind.value}.onnx"

    def info_path(self, kind: ModelKind) -> Path:
        return self.folder / f"{kind.value}.json"

    def save(
        self,
        kind: ModelKind,
        weights: np.ndarray,
        *,
        version: int,
        accuracy: float | None,
        test_samples: int = 0,
    ) -> Path:
        """weights: (n_params,) float32 in manifest order."""
        model = patch_initializers(self._template, self._manifest.split(weights))
        path = self.model_path(kind)
        atomic_write_bytes(path, model)
        info = {
            "kind": kind.value,
            "model_id": self._manifest.model_id,
            "version": version,
            "accuracy": accuracy,  # on the device's own test data; None when it has none
            "test_samples": test_samples,
            "saved_at": time.time(),
            "file": path.name,
        }
        atomic_write_json(self.info_path(kind), info)
        return path
