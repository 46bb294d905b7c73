"""t-of-n Shamir secret sharing of 32-byte secrets over GF(p), p = 2^521 - 1 (a Mersenne prime).

A secret s < 2^256 is f(0) of a random polynomial of degree t-1; holder x gets f(x), x in 1..n.
Any t shares give f(0) by Lagrange interpolation; fewer reveal nothing. `reconstruct` also
checks that every extra share lies on the same polynomial, so a dealer's inconsistent shares are
detected rather than silently reconstructing a wrong secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from protocol.secagg.errors import SecAggError, SecAggReason

__all__ = ["PRIME", "SHARE_BYTES", "reconstruct", "share_from_bytes", "share_to_bytes", "split"]

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
_SECRET_BYTES = 32


def split(secret: bytes, holders: Sequence[int], threshold: int) -> dict[int, int]:
    """Shares of `secret` for each distinct x in `holders`; any `threshold` of them rebuild it."""
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"secret must be {_SECRET_BYTES} bytes")
    if not 1 <= threshold <= len(holders) or len(set(holders)) != len(holders):
        raise SecAggError(SecAggReason.BAD_PARAMS, f"threshold {threshold} of {len(holders)}")
    coeffs = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    out: dict[int, int] = {}
    for x in holders:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


def _lagrange_at(points: Sequence[tuple[int, int]], at: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


def reconstruct(shares: dict[int, int], threshold: int) -> bytes:
    """The secret from >= threshold shares; refuses too few or shares off one polynomial."""
    if len(shares) < threshold:
        raise SecAggError(
            SecAggReason.BELOW_THRESHOLD, f"{len(shares)} shares, threshold {threshold}"
        )
    points = sorted(shares.items())
    base = points[:threshold]
    for x, y in points[threshold:]:
        if _lagrange_at(base, x) != y:
            raise SecAggError(SecAggReason.RECONSTRUCTION, f"share {x} is off the polynomial")
    value = _lagrange_at(base, 0)
    if value >= 1 << (8 * _SECRET_BYTES):
        raise SecAggError(SecAggReason.RECONSTRUCTION, "reconstructed value is not a secret")
    return value.to_bytes(_SECRET_BYTES, "big")


def share_to_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise SecAggError(SecAggReason.BAD_SHARE, f"share is {len(data)} bytes, not {SHARE_BYTES}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise SecAggError(SecAggReason.BAD_SHARE, "share outside the field")
    return y
