"""Replay-deterministic Gaussian noise from a secret key: the same (key, version) gives the same
noise bit for bit, so replaying the update log reproduces a noised model exactly.

    release = HKDF-SHA256(key, info = "fleetlearn-dp-noise" || domain || version)  (cryptography)
    stream  = AES-256-CTR(release, counter 0) over zero bytes
    u1, u2  = 53-bit uniforms in (0, 1] from consecutive 64-bit words
    z       = sqrt(-2 ln u1) * [cos(2 pi u2), sin(2 pi u2)]                  (Box-Muller, float64)

The key never leaves the server's state folder (it is not in the published model): whoever knows
it can subtract the noise. A keyed CSPRNG rather than numpy's PCG64 because the noise is the
privacy: its randomness must not be predictable from earlier outputs. Known limit: like every
floating-point Gaussian sampler (Flower's, TF-Privacy's, Opacus's), the low bits of float noise
are not exactly Gaussian (Mironov 2012 for Laplace); a discrete Gaussian would close that gap.

Why a key per release rather than the release in the counter: CTR increments the whole 128-bit
counter block, so streams started at `domain || v` and `domain || v+1` overlap in all but one
block, and release v+1's noise would be release v's shifted by two values: subtracting the
shifted previous model change from the next would cancel the noise. Independent keys make the
streams independent whatever their lengths.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["KEY_BYTES", "NoiseDomain", "derive_key", "gaussian", "stream_words", "uniforms"]

KEY_BYTES = 32


class NoiseDomain(IntEnum):
    """Separate streams for each use of the key at one version."""

    SUM = 1  # noise on the buffer's sum of clipped deltas
    CLIP_COUNT = 2  # noise on the count of unclipped updates (adaptive clipping)


def derive_key(seed: int) -> bytes:
    """A key from a public integer seed: reproducible simulations and tests only (not secret)."""
    return hashlib.sha256(b"fleetlearn-dp-noise-seed:" + str(int(seed)).encode()).digest()


def _release_key(key: bytes, domain: NoiseDomain, version: int) -> bytes:
    if len(key) != KEY_BYTES:
        raise ValueError(f"noise key must be {KEY_BYTES} bytes, got {len(key)}")
    if not 0 <= version < 1 << 64:
        raise ValueError(f"version {version} outside 0..2**64-1")
    info = b"fleetlearn-dp-noise|" + int(domain).to_bytes(8, "big") + version.to_bytes(8, "big")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def stream_words(key: bytes, domain: NoiseDomain, version: int, count: int) -> np.ndarray:
    """(count,) uint64: the release's keystream, read as little-endian words."""
    release = _release_key(key, domain, version)
    encryptor = Cipher(algorithms.AES(release), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * count)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8")  # (count,) uint64


def uniforms(key: bytes, domain: NoiseDomain, version: int, count: int) -> np.ndarray:
    """(count,) float64 uniforms in (0, 1]: never 0, so log(u) is finite."""
    words = stream_words(key, domain, version, count)
    return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


def gaussian(key: bytes, domain: NoiseDomain, version: int, n: int, std: float) -> np.ndarray:
    """(n,) float64 samples of N(0, std^2), a pure function of its arguments."""
    if not std >= 0.0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    half = (n + 1) // 2
    u = uniforms(key, domain, version, 2 * half)  # (2*half,) float64
    radius = np.sqrt(-2.0 * np.log(u[:half]))
    angle = 2.0 * np.pi * u[half:]
    z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]  # (n,) float64
    return z * std
