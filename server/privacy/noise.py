"""Replay-deterministic Gaussian noise from a secret key: the same (key, version) gives the same
noise bit for bit, so replaying the update log reproduces a noised model exactly.

    stream  = AES-256-CTR(key, nonce = domain || version) over zero bytes   (cryptography)
    u1, u2  = 53-bit uniforms in (0, 1] from consecutive 64-bit words
    z       = sqrt(-2 ln u1) * [cos(2 pi u2), sin(2 pi u2)]                  (Box-Muller, float64)

The key never leaves the server's state folder (it is not in the published model): whoever knows
it can subtract the noise. A keyed CSPRNG rather than numpy's PCG64 because the noise is the
privacy: its randomness must not be predictable from earlier outputs. Known limit: like every
floating-point Gaussian sampler (Flower's, TF-Privacy's, Opacus's), the low bits of float noise
are not exactly Gaussian (Mironov 2012 for Laplace); a discrete Gaussian would close that gap.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["KEY_BYTES", "NoiseDomain", "derive_key", "gaussian", "uniforms"]

KEY_BYTES = 32


class NoiseDomain(IntEnum):
    """Separate streams for each use of the key at one version."""

    SUM = 1  # noise on the buffer's sum of clipped deltas
    CLIP_COUNT = 2  # noise on the count of unclipped updates (adaptive clipping)


def derive_key(seed: int) -> bytes:
    """A key from a public integer seed: reproducible simulations and tests only (not secret)."""
    return hashlib.sha256(b"fleetlearn-dp-noise-seed:" + str(int(seed)).encode()).digest()


def _words(key: bytes, domain: NoiseDomain, version: int, count: int) -> np.ndarray:
    if len(key) != KEY_BYTES:
        raise ValueError(f"noise key must be {KEY_BYTES} bytes, got {len(key)}")
    if not 0 <= version < 1 << 64:
        raise ValueError(f"version {version} outside 0..2**64-1")
    nonce = int(domain).to_bytes(8, "big") + version.to_bytes(8, "big")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    stream = encryptor.update(bytes(8 * count)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8")  # (count,) uint64


def uniforms(key: bytes, domain: NoiseDomain, version: int, count: int) -> np.ndarray:
    """(count,) float64 uniforms in (0, 1]: never 0, so log(u) is finite."""
    words = _words(key, domain, version, count)
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
