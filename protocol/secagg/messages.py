"""Secure-aggregation wire messages, framed like protocol/messages.py (schema, then kind).

    device -> server (fl/<fleet>/device/<id>/secagg_up)
        secagg_join      public keys (c_pk: share encryption, s_pk: mask agreement), signed by
                         the device's identity key, and that key's enrolment certificate
        secagg_shares    encrypted Shamir shares for each neighbour + their SHA-256 commitments
        secagg_masked    the masked fixed-point update (+ complaints about bad shares received)
        secagg_signed    the device's signature over the survivor list it was shown (U3)
        secagg_reveal    the shares the unmask request asks for
    server -> one device (fl/<fleet>/device/<id>/secagg_down; only that device may read it)
        secagg_announce  cohort parameters and every member's signed keys and certificate
        secagg_bundle    the shares addressed to this device, and who is still in (U2)
        secagg_check     the members whose masked inputs the server holds (U3): sign it
        secagg_unmask    survivors (reveal self-mask shares) and dropped (reveal key shares),
                         with at least t survivors' signatures over that survivor list
        secagg_result    applied or abandoned (the device retries in a new cohort)

Decoding is cheapest-first: size and framing (`_unpack`), then fields and types, then lengths
of keys, shares and vectors. Cross-message rules (membership, phases) live in the state machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.bounded_msgpack import unpack_bounded
from protocol.errors import ProtocolError, Reason
from protocol.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SCHEMA,
    _as_map,
    _get,
    _get_float,
    _get_int,
    _get_text,
    _pack,
)
from protocol.secagg.fixedpoint import BITS
from protocol.topics import validate_device_id, validate_model_id

__all__ = [
    "JOIN_MAX_BYTES",
    "SMALL_MESSAGE_BYTES",
    "AnyDown",
    "AnyUp",
    "CohortAnnounce",
    "CohortResult",
    "ConsistencyRequest",
    "ConsistencySignature",
    "MaskedInput",
    "Member",
    "SecAggJoin",
    "ShareBundle",
    "ShareOut",
    "SharesMessage",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_down",
    "decode_up",
    "encode",
    "payload_kind",
]

_U63 = (1 << 63) - 1
_MAX_MEMBERS = 1000
_KEY = 32
_SIG = 64  # Ed25519
_SMALL = 1 << 20  # every message but the masked vector fits in 1 MiB at 1000 members
SMALL_MESSAGE_BYTES = _SMALL
JOIN_MAX_BYTES = 4096  # a join: two 32-byte keys, a model id and a device id (about 200 bytes)
# arrays + maps in a message below _SMALL: a shares message holds one map per peer (<= 1024)
_SMALL_CONTAINERS = 1024 + 16
_COHORT_ID = 16  # bytes


@dataclass(frozen=True, slots=True)
class Member:
    device_id: str
    c_pk: bytes  # X25519, encrypts shares
    s_pk: bytes  # X25519, agrees pairwise masks
    identity_pk: bytes  # Ed25519, the device's enrolled identity (protocol/secagg/identity.py)
    cert_sig: bytes  # the enrolment key's signature binding identity_pk to device_id
    advert_sig: bytes  # identity_pk's signature over c_pk and s_pk


@dataclass(frozen=True, slots=True)
class SecAggJoin:
    device_id: str
    model_id: str
    c_pk: bytes
    s_pk: bytes
    identity_pk: bytes
    cert_sig: bytes
    advert_sig: bytes

    def member(self) -> Member:
        return Member(
            self.device_id, self.c_pk, self.s_pk, self.identity_pk, self.cert_sig, self.advert_sig
        )


@dataclass(frozen=True, slots=True)
class CohortAnnounce:
    cohort_id: bytes
    model_id: str
    base_version: int
    num_params: int
    kept: int  # random-k: coordinates every member sends (== num_params: all)
    bits: int
    clip: float
    threshold: int
    degree: int  # SecAgg+ neighbourhood degree, 0 = complete graph
    seed: bytes  # random-k support and neighbourhood ring
    members: tuple[Member, ...]
    noise_std: float = 0.0  # distributed Skellam noise on the sum, in update units (0: none)


@dataclass(frozen=True, slots=True)
class ShareOut:
    peer: str  # recipient (in SharesMessage) or dealer (in ShareBundle)
    ciphertext: bytes
    b_hash: bytes  # SHA-256 commitment to the self-mask seed share
    sk_hash: bytes  # SHA-256 commitment to the mask-key share


@dataclass(frozen=True, slots=True)
class SharesMessage:
    device_id: str
    cohort_id: bytes
    b_commit: bytes  # SHA-256 of the self-mask seed: checks its reconstruction
    shares: tuple[ShareOut, ...]


@dataclass(frozen=True, slots=True)
class ShareBundle:
    cohort_id: bytes
    holders: tuple[str, ...]  # U2: every member whose shares were relayed
    shares: tuple[ShareOut, ...]


@dataclass(frozen=True, slots=True)
class MaskedInput:
    device_id: str
    cohort_id: bytes
    num_samples: int
    data: bytes  # kept x bits/8 bytes, little-endian
    complaints: tuple[str, ...] = ()  # dealers whose share to this device was bad


@dataclass(frozen=True, slots=True)
class ConsistencyRequest:
    cohort_id: bytes
    survivors: tuple[str, ...]  # U3: whose masked inputs the server holds and will count


@dataclass(frozen=True, slots=True)
class ConsistencySignature:
    device_id: str
    cohort_id: bytes
    signature: bytes  # identity key over (fleet, cohort, sorted U3)


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    cohort_id: bytes
    survivors: tuple[str, ...]  # reveal self-mask seed shares of these
    dropped: tuple[str, ...]  # reveal mask-key shares of these
    signatures: dict[str, bytes]  # survivor -> its consistency signature over `survivors`


@dataclass(frozen=True, slots=True)
class UnmaskResponse:
    device_id: str
    cohort_id: bytes
    b_shares: dict[str, bytes]
    sk_shares: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class CohortResult:
    cohort_id: bytes
    applied: bool
    reason: str
    server_version: int
    member_key: bytes = b""  # the addressee's s_pk from its join: names the join it answers


AnyUp = SecAggJoin | SharesMessage | MaskedInput | ConsistencySignature | UnmaskResponse
AnyDown = CohortAnnounce | ShareBundle | ConsistencyRequest | UnmaskRequest | CohortResult

_KIND: dict[type, str] = {
    SecAggJoin: "secagg_join",
    SharesMessage: "secagg_shares",
    MaskedInput: "secagg_masked",
    ConsistencySignature: "secagg_signed",
    UnmaskResponse: "secagg_reveal",
    CohortAnnounce: "secagg_announce",
    ShareBundle: "secagg_bundle",
    ConsistencyRequest: "secagg_check",
    UnmaskRequest: "secagg_unmask",
    CohortResult: "secagg_result",
}


# --- encoding -------------------------------------------------------------------------------


def _share_wire(s: ShareOut) -> dict[str, Any]:
    return {"peer": s.peer, "ct": s.ciphertext, "bh": s.b_hash, "kh": s.sk_hash}


def _body(msg: AnyUp | AnyDown) -> dict[str, Any]:
    if isinstance(msg, SecAggJoin):
        return {"device_id": msg.device_id, "model_id": msg.model_id, "c_pk": msg.c_pk,
                "s_pk": msg.s_pk, "id_pk": msg.identity_pk, "cert_sig": msg.cert_sig,
                "advert_sig": msg.advert_sig}  # fmt: skip
    if isinstance(msg, SharesMessage):
        return {"device_id": msg.device_id, "cohort": msg.cohort_id, "b_commit": msg.b_commit,
                "shares": [_share_wire(s) for s in msg.shares]}  # fmt: skip
    if isinstance(msg, MaskedInput):
        return {"device_id": msg.device_id, "cohort": msg.cohort_id,
                "num_samples": msg.num_samples, "data": msg.data,
                "complaints": list(msg.complaints)}  # fmt: skip
    if isinstance(msg, ConsistencySignature):
        return {"device_id": msg.device_id, "cohort": msg.cohort_id, "sig": msg.signature}
    if isinstance(msg, UnmaskResponse):
        return {"device_id": msg.device_id, "cohort": msg.cohort_id,
                "b_shares": msg.b_shares, "sk_shares": msg.sk_shares}  # fmt: skip
    if isinstance(msg, CohortAnnounce):
        return {"cohort": msg.cohort_id, "model_id": msg.model_id,
                "base_version": msg.base_version, "num_params": msg.num_params,
                "kept": msg.kept, "bits": msg.bits, "clip": msg.clip,
                "threshold": msg.threshold, "degree": msg.degree, "seed": msg.seed,
                "noise_std": msg.noise_std,
                "members": [[m.device_id, m.c_pk, m.s_pk, m.identity_pk, m.cert_sig,
                             m.advert_sig] for m in msg.members]}  # fmt: skip
    if isinstance(msg, ShareBundle):
        return {"cohort": msg.cohort_id, "holders": list(msg.holders),
                "shares": [_share_wire(s) for s in msg.shares]}  # fmt: skip
    if isinstance(msg, ConsistencyRequest):
        return {"cohort": msg.cohort_id, "survivors": list(msg.survivors)}
    if isinstance(msg, UnmaskRequest):
        return {"cohort": msg.cohort_id, "survivors": list(msg.survivors),
                "dropped": list(msg.dropped), "sigs": msg.signatures}  # fmt: skip
    return {"cohort": msg.cohort_id, "applied": msg.applied, "reason": msg.reason,
            "server_version": msg.server_version, "key": msg.member_key}  # fmt: skip


def encode(msg: AnyUp | AnyDown) -> bytes:
    return _pack(_KIND[type(msg)], _body(msg))


# --- decoding -------------------------------------------------------------------------------


def _frame(data: bytes, kinds: tuple[str, ...], max_bytes: int) -> tuple[str, dict[str, Any]]:
    """Size, msgpack framing, schema and kind; only a masked vector may exceed `_SMALL`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(Reason.MALFORMED, f"secagg: payload is {type(data).__name__}")
    if len(data) > max_bytes:
        raise ProtocolError(Reason.OVERSIZE, f"secagg: {len(data)} bytes > limit {max_bytes}")
    # Bounded unpacking: msgpack's own limits bound one container, not how many objects a
    # payload expands to (4 MB of empty maps was +282 MiB). Only a masked vector is larger than
    # _SMALL, and it is one map with a bin and a list of complaints: two containers.
    big = len(data) > _SMALL
    try:
        raw = unpack_bounded(
            data,
            "secagg",
            max_containers=4 if big else _SMALL_CONTAINERS,
            max_array_len=_MAX_MEMBERS if big else 1 << 12,
            max_map_len=16 if big else 1 << 12,
            max_bytes=max_bytes,
        )
    except ProtocolError as exc:
        if not big:
            raise
        raise ProtocolError(
            Reason.OVERSIZE, f"secagg: {len(data)} bytes > {_SMALL} and not a masked vector"
        ) from exc
    doc = _as_map(raw, "secagg")
    if doc.get("schema") != SCHEMA:
        raise ProtocolError(Reason.SCHEMA, f"secagg: schema {doc.get('schema')!r} unsupported")
    kind = doc.get("kind")
    if kind not in kinds:
        raise ProtocolError(Reason.SCHEMA, f"unexpected message kind {str(kind)[:40]!r}")
    if kind != "secagg_masked" and len(data) > _SMALL:
        raise ProtocolError(Reason.OVERSIZE, f"{kind}: {len(data)} bytes > limit {_SMALL}")
    return str(kind), doc


_UP = ("secagg_join", "secagg_shares", "secagg_masked", "secagg_signed", "secagg_reveal")
_DOWN = ("secagg_announce", "secagg_bundle", "secagg_check", "secagg_unmask", "secagg_result")


def payload_kind(data: bytes) -> str:
    """The `kind` of a framed message, or "" (for counters; nothing is validated)."""
    try:
        doc = msgpack.unpackb(data, raw=False, max_bin_len=len(data), max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData):
        return ""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) else ""


def decode_up(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> AnyUp:
    """A device's message to the server; the caller checks the id against the topic's."""
    return _up(*_frame(data, _UP, max_bytes))


def decode_down(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> AnyDown:
    """A server's message to one device."""
    return _down(*_frame(data, _DOWN, max_bytes))


def _bytes(doc: dict[str, Any], key: str, name: str, size: int | None = None) -> bytes:
    value = _get(doc, key, bytes, name)
    if size is not None and len(value) != size:
        raise ProtocolError(Reason.FIELD, f"{name}.{key} is {len(value)} bytes, want {size}")
    return value


def _ids(raw: object, name: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > _MAX_MEMBERS:
        raise ProtocolError(Reason.FIELD, f"{name} is not a list of at most {_MAX_MEMBERS} ids")
    out = tuple(validate_device_id(x) for x in raw)
    if len(set(out)) != len(out):
        raise ProtocolError(Reason.FIELD, f"{name} repeats a device id")
    return out


def _shares(raw: object, name: str) -> tuple[ShareOut, ...]:
    if not isinstance(raw, list) or len(raw) > _MAX_MEMBERS:
        raise ProtocolError(Reason.FIELD, f"{name} is not a list of at most {_MAX_MEMBERS}")
    out = []
    for item in raw:
        doc = _as_map(item, name)
        out.append(
            ShareOut(
                peer=validate_device_id(_get(doc, "peer", str, name)),
                ciphertext=_bytes(doc, "ct", name),
                b_hash=_bytes(doc, "bh", name, 32),
                sk_hash=_bytes(doc, "kh", name, 32),
            )
        )
    if len(out) > 1024 or len({s.peer for s in out}) != len(out):
        raise ProtocolError(Reason.FIELD, f"{name} repeats a peer")
    return tuple(out)


def _share_map(raw: object, name: str, size: int | None = None) -> dict[str, bytes]:
    doc = _as_map(raw, name)
    if len(doc) > _MAX_MEMBERS:
        raise ProtocolError(Reason.FIELD, f"{name} has more than {_MAX_MEMBERS} entries")
    return {validate_device_id(k): _bytes(doc, k, name, size) for k in doc}


def _members(raw: object) -> tuple[Member, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_MEMBERS:
        raise ProtocolError(Reason.FIELD, "secagg_announce.members is not a list of 1..1000")
    out = []
    sizes = (_KEY, _KEY, _KEY, _SIG, _SIG)
    for item in raw:
        if not isinstance(item, list) or len(item) != 6:
            raise ProtocolError(
                Reason.FIELD, "a member is not [device_id, c_pk, s_pk, id_pk, cert_sig, advert_sig]"
            )
        dev, *keys = item
        if not all(isinstance(k, bytes) and len(k) == n for k, n in zip(keys, sizes, strict=True)):
            raise ProtocolError(Reason.FIELD, "member keys must be 32 bytes, signatures 64")
        out.append(Member(validate_device_id(dev), *keys))
    if len({m.device_id for m in out}) != len(out):
        raise ProtocolError(Reason.FIELD, "secagg_announce.members repeats a device")
    return tuple(out)


def _up(kind: str, doc: dict[str, Any]) -> AnyUp:
    dev = validate_device_id(_get(doc, "device_id", str, kind))
    if kind == "secagg_join":
        return SecAggJoin(
            device_id=dev,
            model_id=validate_model_id(_get(doc, "model_id", str, kind)),
            c_pk=_bytes(doc, "c_pk", kind, _KEY),
            s_pk=_bytes(doc, "s_pk", kind, _KEY),
            identity_pk=_bytes(doc, "id_pk", kind, _KEY),
            cert_sig=_bytes(doc, "cert_sig", kind, _SIG),
            advert_sig=_bytes(doc, "advert_sig", kind, _SIG),
        )
    cohort = _bytes(doc, "cohort", kind, _COHORT_ID)
    if kind == "secagg_shares":
        return SharesMessage(
            dev, cohort, _bytes(doc, "b_commit", kind, 32), _shares(doc.get("shares"), kind)
        )
    if kind == "secagg_masked":
        return MaskedInput(
            device_id=dev,
            cohort_id=cohort,
            num_samples=_get_int(doc, "num_samples", kind, 1, _U63),
            data=_bytes(doc, "data", kind),
            complaints=_ids(doc.get("complaints", []), f"{kind}.complaints"),
        )
    if kind == "secagg_signed":
        return ConsistencySignature(dev, cohort, _bytes(doc, "sig", kind, _SIG))
    return UnmaskResponse(
        dev,
        cohort,
        _share_map(doc.get("b_shares"), f"{kind}.b_shares"),
        _share_map(doc.get("sk_shares"), f"{kind}.sk_shares"),
    )


def _down(kind: str, doc: dict[str, Any]) -> AnyDown:
    cohort = _bytes(doc, "cohort", kind, _COHORT_ID)
    if kind == "secagg_announce":
        bits = _get_int(doc, "bits", kind, 0, 64)
        if bits not in BITS:
            raise ProtocolError(Reason.FIELD, f"{kind}.bits={bits} not in {BITS}")
        clip = _get_float(doc, "clip", kind)
        if not clip > 0 or not math.isfinite(clip):
            raise ProtocolError(Reason.FIELD, f"{kind}.clip={clip} must be > 0")
        num_params = _get_int(doc, "num_params", kind, 1, 1 << 30)
        noise_std = _get_float(doc, "noise_std", kind)
        if noise_std < 0:
            raise ProtocolError(Reason.FIELD, f"{kind}.noise_std={noise_std} is negative")
        return CohortAnnounce(
            cohort_id=cohort,
            model_id=validate_model_id(_get(doc, "model_id", str, kind)),
            base_version=_get_int(doc, "base_version", kind, 0, _U63),
            num_params=num_params,
            kept=_get_int(doc, "kept", kind, 1, num_params),
            bits=bits,
            clip=clip,
            threshold=_get_int(doc, "threshold", kind, 1, _MAX_MEMBERS),
            degree=_get_int(doc, "degree", kind, 0, _MAX_MEMBERS),
            seed=_bytes(doc, "seed", kind, 32),
            members=_members(doc.get("members")),
            noise_std=noise_std,
        )
    if kind == "secagg_bundle":
        return ShareBundle(cohort, _ids(doc.get("holders"), kind), _shares(doc.get("shares"), kind))
    if kind == "secagg_check":
        return ConsistencyRequest(cohort, _ids(doc.get("survivors"), f"{kind}.survivors"))
    if kind == "secagg_unmask":
        return UnmaskRequest(
            cohort,
            _ids(doc.get("survivors"), f"{kind}.survivors"),
            _ids(doc.get("dropped"), f"{kind}.dropped"),
            _share_map(doc.get("sigs"), f"{kind}.sigs", _SIG),
        )
    key = _bytes(doc, "key", kind) if "key" in doc else b""
    if len(key) not in (0, _KEY):
        raise ProtocolError(Reason.FIELD, f"{kind}.key is {len(key)} bytes, want 0 or {_KEY}")
    return CohortResult(
        cohort_id=cohort,
        applied=_get(doc, "applied", bool, kind),
        reason=_get_text(doc, "reason", kind),
        server_version=_get_int(doc, "server_version", kind, 0, _U63),
        member_key=key,
    )
