"""Ed25519 signatures over model offers: devices accept only what the fleet key signed."""

from __future__ import annotations

import dataclasses

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.downlink import ModelDelta, delta_signing_bytes
from protocol.errors import ProtocolError, Reason, SignatureError
from protocol.messages import ModelOffer, offer_signing_bytes

__all__ = [
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign_delta",
    "sign_offer",
    "verify_delta",
    "verify_offer",
]

_SIGNATURE_BYTES = 64


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(Reason.FIELD, f"not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ProtocolError(Reason.FIELD, f"fleet key must be Ed25519, got {type(key).__name__}")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(Reason.FIELD, f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ProtocolError(Reason.FIELD, f"fleet key must be Ed25519, got {type(key).__name__}")
    return key


def sign_offer(offer: ModelOffer, key: Ed25519PrivateKey) -> ModelOffer:
    return dataclasses.replace(offer, signature=key.sign(offer_signing_bytes(offer)))


def verify_offer(offer: ModelOffer, key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless the fleet key signed exactly this offer."""
    _verify(key, offer.signature, offer_signing_bytes(offer), f"offer v{offer.version}")


def sign_delta(delta: ModelDelta, key: Ed25519PrivateKey) -> ModelDelta:
    return dataclasses.replace(delta, signature=key.sign(delta_signing_bytes(delta)))


def verify_delta(delta: ModelDelta, key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless the fleet key signed exactly this delta (its result digest
    included: what a device reconstructs is then checked against it, protocol/downlink.py)."""
    what = f"delta v{delta.base_version}->v{delta.version}"
    _verify(key, delta.signature, delta_signing_bytes(delta), what)


def _verify(key: Ed25519PublicKey, signature: bytes, signed: bytes, what: str) -> None:
    if len(signature) != _SIGNATURE_BYTES:
        raise SignatureError(f"{what} is unsigned or its signature is malformed")
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        raise SignatureError(f"{what} signature does not verify against the fleet key") from None
