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


class _Interpolator:
    """The degree t-1 polynomial through t points, evaluated anywhere in O(t) multiplications
    (barycentric weights computed once: t inversions), so checking every extra share is cheap."""

    def __init__(self, points: Sequence[tuple[int, int]]) -> None:
        self.xs = [x for x, _ in points]
        self.terms = []
        for i, (xi, yi) in enumerate(points):
            den = 1
            for j, xj in enumerate(self.xs):
                if i != j:
                    den = den * (xi - xj) % PRIME
            self.terms.append(yi * pow(den, -1, PRIME) % PRIME)

    def at(self, point: int) -> int:
        diffs = [(point - x) % PRIME for x in self.xs]
        suffix = [1] * (len(diffs) + 1)
        for k in range(len(diffs) - 1, -1, -1):
            suffix[k] = suffix[k + 1] * diffs[k] % PRIME
        total, prefix = 0, 1
        for k, term in enumerate(self.terms):
            total = (total + term * prefix % PRIME * suffix[k + 1]) % PRIME
            prefix = prefix * diffs[k] % PRIME
        return total


def reconstruct(shares: dict[int, int], threshold: int) -> bytes:
    """The secret from >= threshold shares; refuses too few or shares off one polynomial."""
    if len(shares) < threshold:
        raise SecAggError(
            SecAggReason.BELOW_THRESHOLD, f"{len(shares)} shares, threshold {threshold}"
        )
    points = sorted(shares.items())
    poly = _Interpolator(points[:threshold])
    for x, y in points[threshold:]:
        if poly.at(x) != y:
            raise SecAggError(SecAggReason.RECONSTRUCTION, f"share {x} is off the polynomial")
    value = poly.at(0)
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
