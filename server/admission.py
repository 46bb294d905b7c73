"""Admission control: every check an update passes before it may touch the model.

Cheapest first (STYLE #5); each refusal raises ProtocolError or RejectedUpdate with a Reason that
is counted in metrics and sent back in the Ack:

    1. size                         OVERSIZE
    2. msgpack, schema, fields      MALFORMED, SCHEMA, FIELD, BAD_DEVICE_ID   (decode_any_update:
                                             schema 2 compact header, or schema 1, deprecated)
    3. payload device == topic's    DEVICE_MISMATCH
    4. model id == manifest digest  UNKNOWN_MODEL
    5. sequence number              REPLAY  (seq <= last applied; an identical redelivery of the
                                             last applied update is a duplicate, not a refusal)
    6. sample count                 SAMPLES (<= 0 or above the cap)
    7. base version                 FUTURE, STALE (tau > max_staleness, or the strategy's rule)
    8. delta tensor                 CODEC, SHAPE, DTYPE, NON_FINITE   (codecs.decode_parts: the
                                             delta stays in codec form, see server/admitted.py)
    9. L2 norm                      NORM (reject; always when its square overflows float32),
                                         or scale the delta down to the bound (clip)

Before all of these the core applies the per-device rate limit (RATE_LIMITED, server/rate_limit.py).
   10. strategy's screen            NORM (adaptive bound), DEVICE_LIMIT (one update per device
                                     per buffer): robust options, `server/robust`

Admission reads the server's state (version, sequence table) but never changes it: the core
records an update's sequence number only once the update is in the durable log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from protocol import codecs
from protocol.errors import ProtocolError, Reason, RejectedUpdate
from protocol.manifest import Manifest
from protocol.messages import DEFAULT_MAX_MESSAGE_BYTES, ClientUpdate, EncodedVector
from protocol.update_header import decode_any_update
from server.admitted import AdmittedUpdate, FusedDelta, FusedUpdate
from server.ingest import payload_digest, same_payload
from server.kernels.fused import clip_factor, index_decoder, scale_delta, sq_norm
from server.strategies.base import Strategy

__all__ = [
    "Admission",
    "AdmissionLimits",
    "Admitted",
    "DuplicateUpdate",
    "NormAction",
    "SequenceTable",
    "decode_admitted",
    "decode_delta",
    "payload_digest",
    "scale_delta",
]

# device id -> (last applied seq, digest of that update's payload)
SequenceTable = Mapping[str, tuple[int, str]]


class NormAction(StrEnum):
    CLIP = "clip"  # scale the delta down to max_norm (robust aggregation, keeps the work)
    REJECT = "reject"  # refuse it with Reason.NORM


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_samples: int = 1_000_000  # one device's local data set; more is implausible on an edge box
    max_norm: float | None = None  # L2 bound of a delta; None = unbounded
    norm_action: NormAction = NormAction.CLIP
    max_staleness: int | None = 50  # tau above this is STALE; None = any (still weighted)
    # per-device token bucket (issue 15): an honest device sends one update per local round
    # (seconds to minutes) plus its outbox after an outage; None = unlimited
    rate_per_minute: float | None = 120.0
    rate_burst: int = 30
    # schema 1 (the map header before issue 17) during its deprecation period: switch it off
    # once the schema-1 counter (fleetlearn_updates_schema_1) stays at 0, i.e. every agent in
    # the field sends schema 2; then it is refused by name (reason "schema")
    accept_schema_1: bool = True

    def __post_init__(self) -> None:
        if self.max_message_bytes <= 0 or self.max_samples <= 0:
            raise ValueError("max_message_bytes and max_samples must be > 0")
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ValueError("max_norm must be a positive finite number")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        rate = self.rate_per_minute
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate_per_minute must be a positive finite number")
        if self.rate_burst < 1:
            raise ValueError("rate_burst must be >= 1")


@dataclass(frozen=True, slots=True)
class Admitted:
    fused: FusedUpdate  # what the strategy receives (codec form, clip factor attached)
    message: ClientUpdate
    staleness: int  # tau at admission
    scale: float  # norm clip factor applied to the delta; 1.0 = untouched
    digest: str  # payload digest, recorded in the sequence table

    @property
    def update(self) -> AdmittedUpdate:
        """The dense form (delta decoded and clipped), for callers that keep whole vectors."""
        return self.fused.admitted()


class DuplicateUpdate(RejectedUpdate):
    """The update last applied for this device arrived again, byte for byte (e.g. a QoS 1
    redelivery after the server crashed before its Ack): acknowledged, never applied twice."""

    def __init__(self, device_id: str, seq: int) -> None:
        super().__init__(Reason.REPLAY, f"duplicate of applied update {device_id}#{seq}")
        self.device_id = device_id
        self.seq = seq


def decode_delta(vector: EncodedVector, manifest: Manifest) -> codecs.DecodedParts:
    """Step 8: the delta against the manifest (length, codec checks, finiteness), codec form."""
    if vector.length != manifest.num_params:
        raise ProtocolError(
            Reason.SHAPE, f"vector has {vector.length} values, model has {manifest.num_params}"
        )
    return codecs.decode_parts(
        vector.data,
        vector.codec,
        vector.length,
        index_decoder=index_decoder(manifest.num_params),
    )


# A delta whose squared norm overflows float32 is no training result: refuse it, never clip it
# (issue 15: values near 1e18 once gave an infinite norm, a clip factor of 0.0, and the update
# was accepted as a zero update). sq_norm sums in float64, so the norm itself is exact here.
_OVERFLOW_NORM = math.sqrt(float(np.finfo(np.float32).max))  # about 1.8e19


def decode_admitted(message: ClientUpdate, manifest: Manifest, scale: float) -> FusedUpdate:
    """Decode a logged, already admitted update (recovery path: no checks but the decoder's)."""
    delta = FusedDelta(decode_delta(message.delta, manifest), scale)
    return FusedUpdate(
        message.device_id, message.seq, message.base_version, message.num_samples, delta
    )


class Admission:
    def __init__(self, manifest: Manifest, limits: AdmissionLimits) -> None:
        self.manifest = manifest
        self.limits = limits
        self._model_id = manifest.model_id

    def decode(self, payload: bytes) -> ClientUpdate:
        """Steps 1-2: size, then msgpack structure, schema and field types."""
        if len(payload) > self.limits.max_message_bytes:
            raise ProtocolError(
                Reason.OVERSIZE,
                f"update is {len(payload)} bytes > limit {self.limits.max_message_bytes}",
            )
        return decode_any_update(
            payload, self.limits.max_message_bytes, legacy=self.limits.accept_schema_1
        )

    def check(
        self,
        topic_device_id: str,
        msg: ClientUpdate,
        payload: bytes,
        *,
        version: int,
        sequences: SequenceTable,
        strategy: Strategy,
    ) -> Admitted:
        """Steps 3-9 on a decoded message (`payload` are its bytes, for the digest)."""
        lim = self.limits
        if msg.device_id != topic_device_id:
            raise RejectedUpdate(
                Reason.DEVICE_MISMATCH,
                f"payload device {msg.device_id!r} published on {topic_device_id!r}'s topic",
            )
        if msg.model_id != self._model_id:
            raise RejectedUpdate(Reason.UNKNOWN_MODEL, f"model {msg.model_id[:16]}... not served")
        last = sequences.get(msg.device_id)
        if last is not None and msg.seq <= last[0]:
            if msg.seq == last[0] and same_payload(payload, last[1]):
                raise DuplicateUpdate(msg.device_id, msg.seq)
            raise RejectedUpdate(Reason.REPLAY, f"seq {msg.seq} <= last applied {last[0]}")
        if not 0 < msg.num_samples <= lim.max_samples:
            raise RejectedUpdate(
                Reason.SAMPLES, f"num_samples {msg.num_samples} outside 1..{lim.max_samples}"
            )
        if msg.base_version > version:
            raise RejectedUpdate(
                Reason.FUTURE, f"base version {msg.base_version} > server version {version}"
            )
        tau = version - msg.base_version
        if lim.max_staleness is not None and tau > lim.max_staleness:
            raise RejectedUpdate(Reason.STALE, f"staleness {tau} > max {lim.max_staleness}")
        strategy.check(version, msg.base_version)
        strategy.check_device(msg.device_id)  # DP: at most one update per device in a flush
        parts = decode_delta(msg.delta, self.manifest)  # codec form; checked, finite
        scale = 1.0
        norm = math.sqrt(sq_norm(parts))
        if norm > _OVERFLOW_NORM:  # float32 maths would give inf and a clip factor of 0.0
            raise RejectedUpdate(Reason.NORM, f"L2 norm {norm:.3g}: its square overflows float32")
        if lim.max_norm is not None:
            if norm > lim.max_norm and lim.norm_action is NormAction.REJECT:
                raise RejectedUpdate(Reason.NORM, f"norm {norm:.4g} > bound {lim.max_norm}")
            scale = clip_factor(norm, lim.max_norm)
        # the strategy's own bound (robust options: adaptive norm bound, one per device) sees the
        # norm after the fixed clip; the product is applied once, so replay reproduces it exactly
        scale *= strategy.screen(msg.device_id, norm * scale)
        update = FusedUpdate(
            msg.device_id,
            msg.seq,
            msg.base_version,
            msg.num_samples,
            FusedDelta(parts, scale, norm),
        )
        return Admitted(update, msg, tau, scale, payload_digest(payload))

    def admit(
        self,
        topic_device_id: str,
        payload: bytes,
        *,
        version: int,
        sequences: SequenceTable,
        strategy: Strategy,
    ) -> Admitted:
        """All checks, bytes in. Raises ProtocolError / RejectedUpdate (DuplicateUpdate)."""
        msg = self.decode(payload)
        return self.check(
            topic_device_id, msg, payload, version=version, sequences=sequences, strategy=strategy
        )
