"""Downlink deltas: a new model version sent as a quantized step from the version a device holds.

The server keeps the *published* model P (what devices hold), not its training iterate M:

    P_0 = M_0                          (a whole offer)
    step_k = codec(M_k - P_{k-1})      (quantized; what codec drops is in the next step: no drift)
    P_k = rounded(P_{k-1} + step_k)    (`reconstruct`: the one function server and devices run)

so the whole offer of version k (for newcomers) and a delta k-1 -> k reconstruct the same bits.
`rounded` is the whole offer's codec (float32: exact; float16: what a newcomer decodes).

A `ModelDelta` is signed like an offer (its own message kind, so neither signature verifies as the
other) and names both ends by digest: `base_digest` (the weights it applies to) and
`result_digest` (what the server published). A device applies it only to the exact base it holds
and keeps the result only when the digest of what it reconstructed is the signed one; a relay that
alters, reorders or replays a delta gets it refused, and the device asks for the whole offer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol import codecs
from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest
from protocol.messages import (
    _U63,
    DEFAULT_MAX_MESSAGE_BYTES,
    EncodedVector,
    _get,
    _get_float,
    _get_int,
    _get_text,
    _metrics,
    _only_known,
    _pack,
    _unpack,
    _vector_from_wire,
    _vector_to_wire,
    decode_vector,
    encode_vector,
)
from protocol.topics import validate_model_id

__all__ = [
    "WHOLE_CODECS",
    "BaseMismatch",
    "ModelDelta",
    "PublishedModel",
    "apply_delta",
    "decode_delta",
    "delta_signing_bytes",
    "encode_delta",
    "next_published",
    "reconstruct",
    "rounded",
    "weights_digest",
]

_KIND = "model_delta"
# Whole offers are float32 or float16: both round trips are idempotent, so `rounded` of a model
# already rounded is itself and a newcomer decodes exactly P_k.
WHOLE_CODECS = frozenset({"float32", "float16"})
_DIGEST_CHARS = 64  # sha256, hex


class BaseMismatch(ProtocolError):
    """A well-formed, signed delta for a base this device does not hold (missed versions, or a
    relay replaying an old one): the device needs the whole offer."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.STALE, detail)


@dataclass(frozen=True, slots=True)
class ModelDelta:
    model_id: str
    version: int  # the version this delta produces
    base_version: int  # the version it applies to
    manifest_digest: str
    base_digest: str  # weights_digest of the base weights
    result_digest: str  # weights_digest of the reconstructed (= published) weights
    result_codec: dict[str, Any]  # the whole offer's codec: how the sum is rounded
    delta: EncodedVector
    created_at: float
    fedprox_mu: float = 0.0
    signature: bytes = b""  # Ed25519 over delta_signing_bytes()
    privacy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishedModel:
    """What devices hold of one version: its weights (float32, never mutated) and their digest."""

    version: int
    weights: np.ndarray  # (n,) float32
    digest: str


def weights_digest(weights: np.ndarray) -> str:
    """sha256 of the little-endian float32 bytes: the identity of a model's exact bits."""
    flat = np.ascontiguousarray(weights, dtype="<f4").ravel()
    return hashlib.sha256(flat.tobytes()).hexdigest()


def rounded(weights: np.ndarray, whole_codec: Mapping[str, Any]) -> np.ndarray:
    """The weights as a newcomer decodes them from a whole offer in `whole_codec`."""
    spec = codecs.validate_spec(dict(whole_codec))
    if spec["name"] not in WHOLE_CODECS or spec["lossless"] != "none":
        raise ProtocolError(Reason.CODEC, f"whole offers are float32 or float16, not {spec}")
    flat = np.ascontiguousarray(weights, dtype=np.float32).ravel()  # (n,) float32
    if spec["name"] == "float32":
        return flat
    return codecs.decode(codecs.encode(flat, spec), spec, int(flat.size))


def reconstruct(
    base: np.ndarray, step: EncodedVector, manifest: Manifest, whole_codec: Mapping[str, Any]
) -> np.ndarray:
    """base + decoded step, rounded as a whole offer: the same bits on server and device."""
    decoded = decode_vector(step, manifest)  # (n,) float32, finite, length checked
    with np.errstate(over="ignore"):  # an overflow is caught below as non-finite
        total = np.add(base, decoded, dtype=np.float32)  # (n,) float32
    if not np.isfinite(total).all():
        raise ProtocolError(Reason.NON_FINITE, "delta overflows the base model")
    return rounded(total, whole_codec)


def next_published(
    previous: PublishedModel | None,
    model: np.ndarray,
    version: int,
    manifest: Manifest,
    delta_codec: Mapping[str, Any],
    whole_codec: Mapping[str, Any],
) -> tuple[PublishedModel, EncodedVector | None]:
    """The server's step: the model to publish for `version` and, when a previous published
    model exists, the encoded step from it (None: send only a whole offer)."""
    if previous is None or previous.version >= version:
        weights = rounded(model, whole_codec)
        return PublishedModel(version, weights, weights_digest(weights)), None
    step = encode_vector(np.subtract(model, previous.weights, dtype=np.float32), delta_codec)
    weights = reconstruct(previous.weights, step, manifest, whole_codec)
    return PublishedModel(version, weights, weights_digest(weights)), step


def apply_delta(delta: ModelDelta, held: PublishedModel, manifest: Manifest) -> PublishedModel:
    """The device's step (the delta's signature already verified): BaseMismatch when it is not
    for the held model, ProtocolError when what it reconstructs is not what the server signed."""
    if delta.base_version != held.version or delta.base_digest != held.digest:
        raise BaseMismatch(
            f"delta v{delta.base_version}->v{delta.version} is not for the held "
            f"v{held.version} ({held.digest[:12]}, delta base {delta.base_digest[:12]})"
        )
    weights = reconstruct(held.weights, delta.delta, manifest, delta.result_codec)
    digest = weights_digest(weights)
    if digest != delta.result_digest:
        raise ProtocolError(
            Reason.BAD_SIGNATURE,
            f"v{delta.version} reconstructs to {digest[:12]}, signed {delta.result_digest[:12]}",
        )
    return PublishedModel(delta.version, weights, digest)


# --- wire -----------------------------------------------------------------------------------


def _body(d: ModelDelta) -> dict[str, Any]:
    return {
        "model_id": d.model_id,
        "version": d.version,
        "base_version": d.base_version,
        "manifest_digest": d.manifest_digest,
        "base_digest": d.base_digest,
        "result_digest": d.result_digest,
        "result_codec": d.result_codec,
        "delta": _vector_to_wire(d.delta),
        "created_at": d.created_at,
        "fedprox_mu": d.fedprox_mu,
    } | ({"privacy": d.privacy} if d.privacy else {})


def delta_signing_bytes(d: ModelDelta) -> bytes:
    """Every field but the signature, framed with kind `model_delta` (never an offer's bytes)."""
    return _pack(_KIND, _body(d))


def encode_delta(d: ModelDelta) -> bytes:
    return _pack(_KIND, _body(d) | {"signature": d.signature})


_KEYS = frozenset(
    {"schema", "kind", "signature", "model_id", "version", "base_version", "manifest_digest"}
    | {"base_digest", "result_digest", "result_codec", "delta", "created_at", "fedprox_mu"}
    | {"privacy"}
)
_VECTOR_KEYS = frozenset({"codec", "data", "length"})


def _digest(doc: dict[str, Any], key: str) -> str:
    value = _get_text(doc, key, _KIND)
    if len(value) != _DIGEST_CHARS or any(c not in "0123456789abcdef" for c in value):
        raise ProtocolError(Reason.FIELD, f"{_KIND}.{key} is not a sha256 hex digest")
    return value


def decode_delta(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ModelDelta:
    """Untrusted bytes -> ModelDelta: size, schema and kind, exact field set, types, ranges.
    The step's values are decoded later, against the manifest, by `reconstruct`."""
    doc = _unpack(data, _KIND, max_bytes)
    _only_known(doc, _KEYS, _KIND)
    _only_known(doc.get("delta"), _VECTOR_KEYS, f"{_KIND}.delta")
    version = _get_int(doc, "version", _KIND, 1, _U63)
    base_version = _get_int(doc, "base_version", _KIND, 0, _U63)
    if base_version >= version:
        raise ProtocolError(Reason.FIELD, f"{_KIND}: base v{base_version} >= v{version}")
    mu = _get_float(doc, "fedprox_mu", _KIND)
    if mu < 0:
        raise ProtocolError(Reason.FIELD, f"{_KIND}.fedprox_mu={mu} is negative")
    result_codec = codecs.validate_spec(_get(doc, "result_codec", dict, _KIND))
    if result_codec["name"] not in WHOLE_CODECS or result_codec["lossless"] != "none":
        raise ProtocolError(Reason.CODEC, f"{_KIND}.result_codec {result_codec['name']!r}")
    return ModelDelta(
        model_id=validate_model_id(_get(doc, "model_id", str, _KIND)),
        version=version,
        base_version=base_version,
        manifest_digest=_get_text(doc, "manifest_digest", _KIND),
        base_digest=_digest(doc, "base_digest"),
        result_digest=_digest(doc, "result_digest"),
        result_codec=_get(doc, "result_codec", dict, _KIND),
        delta=_vector_from_wire(doc.get("delta"), f"{_KIND}.delta"),
        created_at=_get_float(doc, "created_at", _KIND),
        fedprox_mu=mu,
        signature=_get(doc, "signature", bytes, _KIND),
        privacy=_metrics(doc.get("privacy", {}), f"{_KIND}.privacy"),
    )
