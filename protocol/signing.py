"""Ed25519 signatures over model offers: devices accept only what the fleet key signed."""

from __future__ import annotations

import dataclasses

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import ProtocolError, Reason, SignatureError
from protocol.messages import ModelOffer, offer_signing_bytes

__all__ = [
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign_offer",
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
    if len(offer.signature) != _SIGNATURE_BYTES:
        raise SignatureError(f"offer v{offer.version} is unsigned or its signature is malformed")
    try:
        key.verify(offer.signature, offer_signing_bytes(offer))
    except InvalidSignature:
        raise SignatureError(
            f"offer v{offer.version} signature does not verify against the fleet key"
        ) from None
