"""Key agreement, derivation and mask expansion, from `cryptography` primitives only.

secret  = X25519(sk_u, pk_v)                          (the same for u and v)
key     = HKDF-SHA256(secret, info = purpose | cohort | ids)
mask    = ChaCha20(key, nonce 0) keystream read as n little-endian uint16/uint32
shares  = ChaCha20-Poly1305(key(u -> v)), associated data = cohort | u | v

A peer's public key is checked before use (`check_public_key`): a point of the curve's small
subgroup makes X25519's output all zeros for every private key, so a member announcing one would
share a known key with everyone. `agree` refuses an all-zero secret as a second line.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.fixedpoint import uint_dtype

__all__ = [
    "KeyPair",
    "agree",
    "check_public_key",
    "decrypt_share",
    "derive",
    "encrypt_share",
    "expand",
    "new_keypair",
    "public_from_private",
]

_NONCE16 = bytes(16)  # ChaCha20: each key expands exactly one stream, so a fixed nonce is safe
_NONCE12 = bytes(12)  # AEAD: one message per (cohort, sender, receiver) key


class KeyPair:
    __slots__ = ("private", "public")

    def __init__(self, private: bytes, public: bytes) -> None:
        self.private = private  # 32 bytes raw X25519
        self.public = public  # 32 bytes raw X25519


def public_from_private(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def new_keypair(seed: bytes | None = None) -> KeyPair:
    private = os.urandom(32) if seed is None else seed
    return KeyPair(private, public_from_private(private))


_P = (1 << 255) - 19
# u-coordinates (top bit ignored, as X25519 ignores it) of the points of order 1, 2, 4 and 8,
# canonical or not: 0, 1, the two points of order 8, p - 1, p (= 0) and p + 1 (= 1), as in
# libsodium's blocklist. Their exchange with any clamped private key is all zeros.
_LOW_ORDER = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P - 1,
        _P,
        _P + 1,
    }
)


def check_public_key(public: bytes) -> bytes:
    """`public` if it is a 32-byte X25519 key outside the small subgroup; else BAD_KEY."""
    if not isinstance(public, bytes) or len(public) != 32:
        raise SecAggError(SecAggReason.BAD_KEY, "public key is not 32 bytes")
    if int.from_bytes(public, "little") & ((1 << 255) - 1) in _LOW_ORDER:
        raise SecAggError(SecAggReason.BAD_KEY, "public key is a low-order point")
    return public


def agree(private: bytes, peer_public: bytes) -> bytes:
    try:
        secret = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as exc:  # wrong length, or a low-order point (all-zero shared secret)
        raise SecAggError(SecAggReason.BAD_KEY, f"key agreement failed: {exc}") from exc
    if secret == bytes(len(secret)):  # OpenSSL refuses it already; never rely on one check
        raise SecAggError(SecAggReason.BAD_KEY, "key agreement gave an all-zero secret")
    return secret


def derive(secret: bytes, purpose: bytes, context: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose + b"|" + context)
    return hkdf.derive(secret)


def expand(key: bytes, length: int, bits: int) -> npt.NDArray[Any]:
    """A (length,) uint16/uint32 vector uniform in Z_{2^b}, deterministic in `key`."""
    dtype = uint_dtype(bits)
    enc = Cipher(algorithms.ChaCha20(key, _NONCE16), mode=None).encryptor()
    stream = enc.update(bytes(length * dtype.itemsize))
    return np.frombuffer(stream, dtype=dtype)


def encrypt_share(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_NONCE12, plaintext, context)


def decrypt_share(key: bytes, ciphertext: bytes, context: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE12, ciphertext, context)
    except InvalidTag as exc:
        raise SecAggError(SecAggReason.BAD_SHARE, "share does not decrypt") from exc
