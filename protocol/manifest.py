"""A model's manifest: what both sides must agree on to exchange flat weight vectors.

Weights and deltas travel as one flat float32 vector whose order is `Manifest.params`: the
*trainable* parameters only. `Manifest.frozen` lists the frozen ones (a frozen backbone, buffers),
whose values ship once in the artifacts folder (`frozen_weights.npy`, hashed like every file) and
never travel in offers or updates. The manifest also names the artifact files
with their sha256, so `digest` (sha256 of the canonical JSON) content-addresses the whole model.
The model id *is* the digest.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.errors import ProtocolError, Reason

__all__ = [
    "INPUT_DTYPES",
    "MANIFEST_SCHEMA",
    "Manifest",
    "ParamSpec",
    "decode_manifest",
    "encode_manifest",
]

MANIFEST_SCHEMA = 2  # 2: training-step graph artifacts, frozen parameters
_MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists parameters, not weights: 1 MiB is generous
_SUPPORTED_DTYPES = frozenset({"float32"})
# float32 for features, windows and images; int64 for token ids (text models, see `tokenizer`)
INPUT_DTYPES = ("float32", "int64")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class Manifest:
    """Parameters in flat order plus what a trainer needs to know about the model."""

    model_name: str  # zoo name, e.g. "mlp", "cnn2d"
    params: tuple[ParamSpec, ...]  # trainable parameters, in flat-vector order (what travels)
    input_name: str
    input_shape: tuple[int, ...]  # one sample, without the batch axis
    num_classes: int
    loss: str = "cross_entropy"
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    files: dict[str, str] = field(default_factory=dict)  # artifact file name -> sha256 hex
    extra: dict[str, Any] = field(default_factory=dict)  # free-form build info (seed, opset)
    frozen: tuple[ParamSpec, ...] = ()  # frozen parameters and buffers, frozen_weights.npy order
    input_dtype: str = "float32"  # one of INPUT_DTYPES
    # Text models: the artifact file (listed in `files`) whose tokenizer turns a device's text
    # into input_shape == (max_length,) int64 token ids; None for every other model.
    tokenizer: str | None = None

    @property
    def num_params(self) -> int:
        return sum(p.size for p in self.params)

    @property
    def num_frozen(self) -> int:
        return sum(p.size for p in self.frozen)

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical_bytes(self)).hexdigest()

    @property
    def model_id(self) -> str:
        return self.digest

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a flat vector, one per parameter, with the manifest's shapes."""
        self.check_flat(flat)
        out: dict[str, np.ndarray] = {}
        offset = 0
        for p in self.params:
            out[p.name] = flat[offset : offset + p.size].reshape(p.shape)
            offset += p.size
        return out

    def flatten(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """One float32 vector in manifest order from named tensors (shapes checked)."""
        parts = []
        for p in self.params:
            if p.name not in tensors:
                raise ProtocolError(Reason.SHAPE, f"tensor {p.name!r} missing")
            t = np.asarray(tensors[p.name])
            if t.shape != p.shape:
                raise ProtocolError(Reason.SHAPE, f"{p.name}: shape {t.shape} != {p.shape}")
            parts.append(t.astype(np.float32, copy=False).ravel())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def check_flat(self, flat: np.ndarray) -> None:
        if flat.dtype != np.float32:
            raise ProtocolError(Reason.DTYPE, f"flat vector dtype {flat.dtype} != float32")
        if flat.shape != (self.num_params,):
            raise ProtocolError(
                Reason.SHAPE, f"flat vector shape {flat.shape} != ({self.num_params},)"
            )


def _specs(specs: tuple[ParamSpec, ...]) -> list[dict[str, Any]]:
    return [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype} for p in specs]


def _as_dict(m: Manifest) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "model_name": m.model_name,
        "params": _specs(m.params),
        "frozen": _specs(m.frozen),
        "input_name": m.input_name,
        "input_shape": list(m.input_shape),
        "input_dtype": m.input_dtype,
        "tokenizer": m.tokenizer,
        "num_classes": m.num_classes,
        "loss": m.loss,
        "optimizer": m.optimizer,
        "learning_rate": m.learning_rate,
        "files": dict(sorted(m.files.items())),
        "extra": m.extra,
    }


def _canonical_bytes(m: Manifest) -> bytes:
    return json.dumps(_as_dict(m), sort_keys=True, separators=(",", ":")).encode()


def encode_manifest(m: Manifest) -> bytes:
    """Human-readable manifest.json, with its digest recorded for readers (not part of it)."""
    doc = _as_dict(m) | {"digest": m.digest, "num_params": m.num_params}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in doc:
        raise ProtocolError(Reason.FIELD, f"manifest: missing {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(Reason.FIELD, f"manifest: {key!r} has type {type(value).__name__}")
    return value


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise ProtocolError(Reason.SHAPE, f"manifest: {what} is not a list of sizes: {value!r}")
    return tuple(value)


def _decode_specs(doc: dict[str, Any], key: str) -> tuple[ParamSpec, ...]:
    specs = []
    for i, p in enumerate(_field(doc, key, list)):
        if not isinstance(p, dict):
            raise ProtocolError(Reason.FIELD, f"manifest: {key}[{i}] is not an object")
        dtype = _field(p, "dtype", str)
        if dtype not in _SUPPORTED_DTYPES:
            raise ProtocolError(Reason.DTYPE, f"manifest: {key}[{i}] dtype {dtype!r}")
        specs.append(ParamSpec(_field(p, "name", str), _shape(p.get("shape"), "shape"), dtype))
    return tuple(specs)


def decode_manifest(data: bytes) -> Manifest:
    """Parse and validate manifest.json bytes (untrusted: size, schema, structure, digest)."""
    if len(data) > _MAX_MANIFEST_BYTES:
        raise ProtocolError(Reason.OVERSIZE, f"manifest is {len(data)} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(Reason.MALFORMED, f"manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(Reason.MALFORMED, "manifest is not a JSON object")
    if doc.get("schema") != MANIFEST_SCHEMA:
        raise ProtocolError(Reason.SCHEMA, f"manifest schema {doc.get('schema')!r} unsupported")
    params = _decode_specs(doc, "params")
    frozen = _decode_specs(doc, "frozen")
    names = [p.name for p in (*params, *frozen)]
    if len(set(names)) != len(names):
        raise ProtocolError(Reason.FIELD, "manifest: duplicate parameter names")
    files = _field(doc, "files", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ProtocolError(Reason.FIELD, "manifest: files must map names to sha256 strings")
    if not all(_FILE_NAME.fullmatch(k) for k in files):  # a name, never a path out of the folder
        raise ProtocolError(Reason.FIELD, "manifest: file names must be plain names")
    input_dtype = _field(doc, "input_dtype", str)
    if input_dtype not in INPUT_DTYPES:
        raise ProtocolError(Reason.DTYPE, f"manifest: input_dtype {input_dtype!r}")
    tokenizer = doc.get("tokenizer")
    if tokenizer is not None and (not isinstance(tokenizer, str) or tokenizer not in files):
        raise ProtocolError(Reason.FIELD, "manifest: tokenizer must name a file it lists")
    num_classes = _field(doc, "num_classes", int)
    lr = _field(doc, "learning_rate", (int, float))
    if num_classes < 2 or not math.isfinite(lr) or lr <= 0:
        raise ProtocolError(Reason.FIELD, "manifest: num_classes < 2 or bad learning_rate")
    manifest = Manifest(
        model_name=_field(doc, "model_name", str),
        params=params,
        input_name=_field(doc, "input_name", str),
        input_shape=_shape(doc.get("input_shape"), "input_shape"),
        num_classes=num_classes,
        loss=_field(doc, "loss", str),
        optimizer=_field(doc, "optimizer", str),
        learning_rate=float(lr),
        files=files,
        extra=_field(doc, "extra", dict),
        frozen=frozen,
        input_dtype=input_dtype,
        tokenizer=tokenizer,
    )
    recorded = doc.get("digest")
    if recorded is not None and recorded != manifest.digest:
        raise ProtocolError(Reason.UNKNOWN_MODEL, "manifest: recorded digest does not match")
    return manifest
