"""Who may be a cohort member, and what it said: Ed25519 identities for secure aggregation.

    enrolment key (offline) --signs--> identity certificate: (fleet, device id) -> identity key
    identity key (on the device) --signs--> key advertisement: the session's two X25519 keys
                                 --signs--> consistency: the survivors U3 of one cohort

A device takes part in a cohort only if every member's certificate verifies against the
enrolment public key it was provisioned with and every member's advertisement verifies against
that member's identity key, so a relay or server cannot put its own X25519 keys under an
enrolled device's name (Bonawitz et al. 2017, the malicious-server variant).

Why certificates carried in each join, not a signed roster file shipped to every device: a
roster must be re-shipped to every device in the field whenever one device is enrolled, and a
device with an old roster refuses every cohort with a newcomer in it. A certificate is issued
once, at enrolment, travels in the device's own join and is relayed in the announce; peers
check it with the one enrolment public key they already hold. Revoking a device is the broker's
job (`fleetlearn broker revoke-device` removes its credentials, so it can no longer join).

Why an enrolment key of its own rather than the fleet key that signs model offers: the fleet
key lives on the aggregation server, and a server that can sign certificates can enrol its own
identities and defeat the check against a malicious server. The enrolment key stays in the
provisioning folder next to the broker CA's key (fleetlearn/provision_identity.py); an operator
who accepts that risk may point both at one key.

Why the advertisement names the fleet and model but not the cohort id: a device sends its keys
before it knows the cohort (the server opens a cohort on the first join and names it in the
announce). The X25519 keys are fresh for each session and their share-encryption half is never
revealed, so a replayed advertisement gives its replayer no more than a member it controls
without the identity key: it cannot sign the consistency round, which is bound to the cohort.

Pure: no I/O; key generation draws from the OS like prg.new_keypair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.errors import ProtocolError, Reason
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.messages import Member
from protocol.topics import validate_device_id, validate_fleet

__all__ = [
    "DeviceIdentity",
    "Enrolment",
    "IdentityCert",
    "Trust",
    "advert_bytes",
    "cert_bytes",
    "consistency_bytes",
    "decode_cert",
    "encode_cert",
    "raw_public",
]

_KEY = 32
_SIG = 64
_MAX_CERT_FILE = 4096


def _fields(tag: bytes, *parts: bytes) -> bytes:
    """Tag, then each part length-prefixed: no two field lists sign the same bytes."""
    return tag + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def cert_bytes(fleet: str, device_id: str, identity_pk: bytes) -> bytes:
    return _fields(
        b"fleetlearn-secagg-identity-v1", fleet.encode(), device_id.encode(), identity_pk
    )


def advert_bytes(fleet: str, model_id: str, device_id: str, c_pk: bytes, s_pk: bytes) -> bytes:
    return _fields(
        b"fleetlearn-secagg-advert-v1",
        fleet.encode(),
        model_id.encode(),
        device_id.encode(),
        c_pk,
        s_pk,
    )


def consistency_bytes(fleet: str, cohort_id: bytes, survivors: tuple[str, ...]) -> bytes:
    """What a survivor signs in the consistency round: the cohort and its sorted U3."""
    ids = sorted(survivors)
    return _fields(
        b"fleetlearn-secagg-u3-v1", fleet.encode(), cohort_id, *(d.encode() for d in ids)
    )


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _verify(public: bytes, signature: bytes, data: bytes, what: str) -> None:
    if len(public) != _KEY or len(signature) != _SIG:
        raise SecAggError(SecAggReason.BAD_SIGNATURE, f"{what}: malformed key or signature")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise SecAggError(
            SecAggReason.BAD_SIGNATURE, f"{what}: signature does not verify"
        ) from None


@dataclass(frozen=True, slots=True)
class IdentityCert:
    """The enrolment key's statement "in `fleet`, `device_id` signs with `identity_pk`"."""

    fleet: str
    device_id: str
    identity_pk: bytes  # Ed25519, raw 32 bytes
    signature: bytes  # Ed25519 by the enrolment key over cert_bytes()


@dataclass(frozen=True)
class Trust:
    """What a device (or an honest server) checks members against: its fleet and the enrolment
    public key it was provisioned with."""

    fleet: str
    enrolment_key: Ed25519PublicKey

    def check_member(self, m: Member, model_id: str) -> None:
        """BAD_SIGNATURE unless `m`'s identity is enrolled and it advertised exactly these keys."""
        ca = raw_public(self.enrolment_key)
        _verify(ca, m.cert_sig, cert_bytes(self.fleet, m.device_id, m.identity_pk), m.device_id)
        data = advert_bytes(self.fleet, model_id, m.device_id, m.c_pk, m.s_pk)
        _verify(m.identity_pk, m.advert_sig, data, f"{m.device_id}'s keys")

    def valid_consistency(
        self, m: Member, cohort_id: bytes, survivors: tuple[str, ...], signature: bytes
    ) -> bool:
        try:
            data = consistency_bytes(self.fleet, cohort_id, survivors)
            _verify(m.identity_pk, signature, data, m.device_id)
        except SecAggError:
            return False
        return True


@dataclass(frozen=True)
class DeviceIdentity:
    """One device's identity key, its certificate and the trust it checks peers against."""

    cert: IdentityCert
    key: Ed25519PrivateKey
    trust: Trust

    def __post_init__(self) -> None:
        if raw_public(self.key.public_key()) != self.cert.identity_pk:
            raise ValueError("identity key does not match its certificate")
        if self.cert.fleet != self.trust.fleet:
            raise ValueError(f"certificate is for fleet {self.cert.fleet!r}")

    def sign_advert(self, model_id: str, c_pk: bytes, s_pk: bytes) -> bytes:
        return self.key.sign(
            advert_bytes(self.trust.fleet, model_id, self.cert.device_id, c_pk, s_pk)
        )

    def sign_consistency(self, cohort_id: bytes, survivors: tuple[str, ...]) -> bytes:
        return self.key.sign(consistency_bytes(self.trust.fleet, cohort_id, survivors))


@dataclass(frozen=True)
class Enrolment:
    """An enrolment key in memory: the provisioning CLI's signer, and the simulator's and the
    tests' way to enrol devices in-process."""

    fleet: str
    key: Ed25519PrivateKey

    @classmethod
    def generate(cls, fleet: str) -> Enrolment:
        return cls(validate_fleet(fleet), Ed25519PrivateKey.generate())

    @property
    def trust(self) -> Trust:
        return Trust(self.fleet, self.key.public_key())

    def certify(self, device_id: str, identity_pk: bytes) -> IdentityCert:
        validate_device_id(device_id)
        if len(identity_pk) != _KEY:
            raise ValueError("identity key must be 32 raw bytes")
        sig = self.key.sign(cert_bytes(self.fleet, device_id, identity_pk))
        return IdentityCert(self.fleet, device_id, identity_pk, sig)

    def enrol(self, device_id: str) -> DeviceIdentity:
        key = Ed25519PrivateKey.generate()
        cert = self.certify(device_id, raw_public(key.public_key()))
        return DeviceIdentity(cert, key, self.trust)


# --- the certificate file (JSON text; written by the provisioning CLI, read by the agent) ------


def encode_cert(cert: IdentityCert) -> bytes:
    doc = {
        "kind": "fleetlearn-secagg-identity",
        "fleet": cert.fleet,
        "device_id": cert.device_id,
        "identity_pk": cert.identity_pk.hex(),
        "signature": cert.signature.hex(),
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def decode_cert(data: bytes) -> IdentityCert:
    """Size, then JSON, then fields; the signature is checked by whoever trusts the issuer."""
    if len(data) > _MAX_CERT_FILE:
        raise ProtocolError(Reason.OVERSIZE, f"identity certificate is {len(data)} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(Reason.MALFORMED, f"identity certificate: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "fleetlearn-secagg-identity":
        raise ProtocolError(Reason.SCHEMA, "not a fleetlearn identity certificate")
    try:
        pk, sig = bytes.fromhex(doc["identity_pk"]), bytes.fromhex(doc["signature"])
        fleet, device_id = validate_fleet(doc["fleet"]), validate_device_id(doc["device_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(Reason.FIELD, f"identity certificate: {exc}") from exc
    if len(pk) != _KEY or len(sig) != _SIG:
        raise ProtocolError(Reason.FIELD, "identity certificate: wrong key or signature length")
    return IdentityCert(fleet, device_id, pk, sig)
