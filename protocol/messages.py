"""Wire messages: frozen dataclasses with paired `encode_*` / `decode_*` functions over msgpack.

Every message is a msgpack map whose first key is `schema` (an int) and second `kind` (a str).
Decoding untrusted bytes is cheapest-first (STYLE #5): size, then msgpack structure and schema,
then field presence and types. Tensor contents are checked against a manifest by `decode_vector`
(length, codec, finiteness). Anything refused raises `ProtocolError` with a `Reason`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import numpy as np

from protocol import codecs
from protocol.bounded_msgpack import unpack_bounded
from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest
from protocol.topics import validate_device_id, validate_model_id

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SCHEMA",
    "Ack",
    "ClientUpdate",
    "DeviceStatus",
    "EncodedVector",
    "ModelOffer",
    "decode_ack",
    "decode_offer",
    "decode_status",
    "decode_update",
    "decode_vector",
    "encode_ack",
    "encode_offer",
    "encode_status",
    "encode_update",
    "encode_vector",
    "offer_signing_bytes",
]

SCHEMA = 1
# 16 MiB holds a 4M-parameter float32 model; brokers' max_packet_size should match (broker-config/).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_MAX_LENGTH = 1 << 30  # no model we serve has a billion parameters; bounds allocations
_MAX_METRICS = 64
_MAX_TEXT = 1024
# Decoding bounds (issue 15, object bomb): no message has more than a handful of maps and no
# long arrays, so a payload with thousands of containers is refused before it is built.
_MAX_CONTAINERS = 256
_MAX_ARRAY = 4096
_MAX_MAP = 1 << 12

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class EncodedVector:
    """A flat float32 vector after a codec: the spec travels with the bytes."""

    codec: dict[str, Any]
    data: bytes | memoryview  # a memoryview when decoded in place (protocol/update_header.py)
    length: int


@dataclass(frozen=True, slots=True)
class ModelOffer:
    model_id: str
    version: int  # monotonic
    manifest_digest: str
    weights: EncodedVector
    created_at: float  # unix seconds
    fedprox_mu: float = 0.0  # proximal hint for devices; 0 = plain local training
    signature: bytes = b""  # Ed25519 over offer_signing_bytes()


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    model_id: str
    base_version: int
    device_id: str
    seq: int  # per-device, strictly increasing; the server's replay guard
    num_samples: int
    local_steps: int
    delta: EncodedVector
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    device_id: str
    seq: int
    accepted: bool
    reason: Reason
    server_version: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    online: bool
    state: str
    model_version: int | None
    reason: str
    conditions: dict[str, float | bool | None]
    timestamp: float


# --- vectors -------------------------------------------------------------------------------


def encode_vector(vec: np.ndarray, codec: Mapping[str, Any]) -> EncodedVector:
    spec = codecs.validate_spec(dict(codec))
    flat = np.ascontiguousarray(vec, dtype=np.float32).ravel()  # (n,) float32
    return EncodedVector(spec, codecs.encode(flat, spec), int(flat.size))


def decode_vector(v: EncodedVector, manifest: Manifest) -> np.ndarray:
    """Decode and check a vector against a manifest: length, codec consistency, finiteness."""
    if v.length != manifest.num_params:
        raise ProtocolError(
            Reason.SHAPE, f"vector has {v.length} values, model has {manifest.num_params}"
        )
    flat = codecs.decode(v.data, codecs.validate_spec(v.codec), v.length)
    if flat.dtype != np.float32 or flat.shape != (manifest.num_params,):
        raise ProtocolError(Reason.SHAPE, f"codec produced {flat.dtype} {flat.shape}")
    if not np.isfinite(flat).all():
        raise ProtocolError(Reason.NON_FINITE, "vector holds NaN or infinity")
    return flat


def _vector_to_wire(v: EncodedVector) -> dict[str, Any]:
    return {"codec": v.codec, "data": v.data, "length": v.length}


def _vector_from_wire(raw: object, name: str) -> EncodedVector:
    doc = _as_map(raw, name)
    codec = _get(doc, "codec", dict, name)
    if not all(isinstance(k, str) for k in codec):
        raise ProtocolError(Reason.CODEC, f"{name}.codec keys must be strings")
    return EncodedVector(
        codec=codec,
        data=_get(doc, "data", bytes, name),
        length=_get_int(doc, "length", name, 0, _MAX_LENGTH),
    )


# --- field helpers (structure and types of untrusted maps) ----------------------------------


def _as_map(raw: object, name: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ProtocolError(Reason.MALFORMED, f"{name} is not a map with string keys")
    return raw


def _get(doc: dict[str, Any], key: str, kind: type[_T], name: str) -> _T:
    if key not in doc:
        raise ProtocolError(Reason.FIELD, f"{name}.{key} is missing")
    value = doc[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ProtocolError(
            Reason.FIELD, f"{name}.{key} is {type(value).__name__}, expected {kind.__name__}"
        )
    return value


def _get_int(doc: dict[str, Any], key: str, name: str, low: int, high: int) -> int:
    value = _get(doc, key, int, name)
    if not low <= value <= high:
        raise ProtocolError(Reason.FIELD, f"{name}.{key}={value} outside [{low}, {high}]")
    return value


def _get_float(doc: dict[str, Any], key: str, name: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(Reason.FIELD, f"{name}.{key} is missing or not a number")
    if not math.isfinite(value):
        raise ProtocolError(Reason.NON_FINITE, f"{name}.{key} is not finite")
    return float(value)


def _get_text(doc: dict[str, Any], key: str, name: str) -> str:
    value = _get(doc, key, str, name)
    if len(value) > _MAX_TEXT:
        raise ProtocolError(Reason.FIELD, f"{name}.{key} longer than {_MAX_TEXT} characters")
    return value


_U63 = (1 << 63) - 1


# --- framing --------------------------------------------------------------------------------


def _pack(kind: str, body: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb({"schema": SCHEMA, "kind": kind, **body}, use_bin_type=True)
    return out


def _unpack(data: bytes, kind: str, max_bytes: int) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(Reason.MALFORMED, f"{kind}: payload is {type(data).__name__}")
    if len(data) > max_bytes:
        raise ProtocolError(Reason.OVERSIZE, f"{kind}: {len(data)} bytes > limit {max_bytes}")
    raw = unpack_bounded(
        data,
        kind,
        max_containers=_MAX_CONTAINERS,
        max_array_len=_MAX_ARRAY,
        max_map_len=_MAX_MAP,
        max_bytes=max_bytes,
    )
    doc = _as_map(raw, kind)
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise ProtocolError(Reason.SCHEMA, f"{kind}: schema {schema!r} unsupported, want {SCHEMA}")
    if doc.get("kind") != kind:
        raise ProtocolError(Reason.SCHEMA, f"expected a {kind} message, got {doc.get('kind')!r}")
    return doc


# --- ModelOffer -----------------------------------------------------------------------------


def _offer_body(offer: ModelOffer) -> dict[str, Any]:
    return {
        "model_id": offer.model_id,
        "version": offer.version,
        "manifest_digest": offer.manifest_digest,
        "weights": _vector_to_wire(offer.weights),
        "created_at": offer.created_at,
        "fedprox_mu": offer.fedprox_mu,
    }


def offer_signing_bytes(offer: ModelOffer) -> bytes:
    """The exact bytes an offer's signature covers: every field except the signature."""
    return _pack("model_offer", _offer_body(offer))


def encode_offer(offer: ModelOffer) -> bytes:
    return _pack("model_offer", _offer_body(offer) | {"signature": offer.signature})


_OFFER_KEYS = frozenset(
    {"schema", "kind", "signature", "model_id", "version", "manifest_digest", "weights"}
    | {"created_at", "fedprox_mu"}
)
_VECTOR_KEYS = frozenset({"codec", "data", "length"})


def _only_known(doc: object, known: frozenset[str], name: str) -> None:
    """Signed messages carry exactly the fields the signature covers (issue 15: an offer with an
    extra field verified, because the signature is over the fields the decoder re-encodes)."""
    extra = set(doc) - known if isinstance(doc, dict) else set()
    if extra:
        raise ProtocolError(Reason.FIELD, f"{name}: unknown field(s) {sorted(map(str, extra))[:4]}")


def decode_offer(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ModelOffer:
    doc = _unpack(data, "model_offer", max_bytes)
    _only_known(doc, _OFFER_KEYS, "model_offer")
    _only_known(doc.get("weights"), _VECTOR_KEYS, "model_offer.weights")
    mu = _get_float(doc, "fedprox_mu", "model_offer")
    if mu < 0:
        raise ProtocolError(Reason.FIELD, f"model_offer.fedprox_mu={mu} is negative")
    return ModelOffer(
        model_id=validate_model_id(_get(doc, "model_id", str, "model_offer")),
        version=_get_int(doc, "version", "model_offer", 0, _U63),
        manifest_digest=_get_text(doc, "manifest_digest", "model_offer"),
        weights=_vector_from_wire(doc.get("weights"), "model_offer.weights"),
        created_at=_get_float(doc, "created_at", "model_offer"),
        fedprox_mu=mu,
        signature=_get(doc, "signature", bytes, "model_offer"),
    )


# --- ClientUpdate ---------------------------------------------------------------------------


def encode_update(update: ClientUpdate) -> bytes:
    return _pack(
        "client_update",
        {
            "model_id": update.model_id,
            "base_version": update.base_version,
            "device_id": update.device_id,
            "seq": update.seq,
            "num_samples": update.num_samples,
            "local_steps": update.local_steps,
            "delta": _vector_to_wire(update.delta),
            "metrics": update.metrics,
        },
    )


def _metrics(raw: object, name: str) -> dict[str, float]:
    doc = _as_map(raw, name)
    if len(doc) > _MAX_METRICS:
        raise ProtocolError(Reason.FIELD, f"{name} has more than {_MAX_METRICS} entries")
    return {key: _get_float(doc, key, name) for key in doc}


def decode_update(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ClientUpdate:
    doc = _unpack(data, "client_update", max_bytes)
    name = "client_update"
    return ClientUpdate(
        model_id=validate_model_id(_get(doc, "model_id", str, name)),
        base_version=_get_int(doc, "base_version", name, 0, _U63),
        device_id=validate_device_id(_get(doc, "device_id", str, name)),
        seq=_get_int(doc, "seq", name, 0, _U63),
        num_samples=_get_int(doc, "num_samples", name, -_U63, _U63),  # admission bounds it
        local_steps=_get_int(doc, "local_steps", name, 0, _U63),
        delta=_vector_from_wire(doc.get("delta"), f"{name}.delta"),
        metrics=_metrics(doc.get("metrics", {}), f"{name}.metrics"),
    )


# --- Ack ------------------------------------------------------------------------------------


def encode_ack(ack: Ack) -> bytes:
    return _pack(
        "ack",
        {
            "device_id": ack.device_id,
            "seq": ack.seq,
            "accepted": ack.accepted,
            "reason": ack.reason.value,
            "server_version": ack.server_version,
            "detail": ack.detail,
        },
    )


def _reason(value: str) -> Reason:
    try:
        return Reason(value)
    except ValueError:
        raise ProtocolError(Reason.FIELD, f"unknown reason code {value[:40]!r}") from None


def decode_ack(data: bytes, max_bytes: int = 64 * 1024) -> Ack:
    doc = _unpack(data, "ack", max_bytes)
    return Ack(
        device_id=validate_device_id(_get(doc, "device_id", str, "ack")),
        seq=_get_int(doc, "seq", "ack", 0, _U63),
        accepted=_get(doc, "accepted", bool, "ack"),
        reason=_reason(_get_text(doc, "reason", "ack")),
        server_version=_get_int(doc, "server_version", "ack", 0, _U63),
        detail=_get_text(doc, "detail", "ack"),
    )


# --- DeviceStatus ---------------------------------------------------------------------------


def encode_status(status: DeviceStatus) -> bytes:
    return _pack(
        "device_status",
        {
            "device_id": status.device_id,
            "online": status.online,
            "state": status.state,
            "model_version": status.model_version,
            "reason": status.reason,
            "conditions": status.conditions,
            "timestamp": status.timestamp,
        },
    )


def _conditions(raw: object) -> dict[str, float | bool | None]:
    doc = _as_map(raw, "device_status.conditions")
    if len(doc) > _MAX_METRICS:
        raise ProtocolError(Reason.FIELD, "device_status.conditions has too many entries")
    out: dict[str, float | bool | None] = {}
    for key, value in doc.items():
        if value is None or isinstance(value, bool):
            out[key] = value
        else:
            out[key] = _get_float(doc, key, "device_status.conditions")
    return out


def decode_status(data: bytes, max_bytes: int = 64 * 1024) -> DeviceStatus:
    doc = _unpack(data, "device_status", max_bytes)
    name = "device_status"
    version = doc.get("model_version")
    if version is not None:
        version = _get_int(doc, "model_version", name, 0, _U63)
    return DeviceStatus(
        device_id=validate_device_id(_get(doc, "device_id", str, name)),
        online=_get(doc, "online", bool, name),
        state=_get_text(doc, "state", name),
        model_version=version,
        reason=_get_text(doc, "reason", name),
        conditions=_conditions(doc.get("conditions", {})),
        timestamp=_get_float(doc, "timestamp", name),
    )
