"""What both sides derive from an announcement: checked parameters, keys, masks, commitments.

y_u = z_u + PRG(b_u) + sum_{v in N(u) cap U2, v != u} sign(u, v) PRG(s_uv)   (mod 2^b)
sign(u, v) = +1 if u's index < v's else -1, so each pair's masks cancel in the sum
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.secagg import fixedpoint, randomk
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.graph import neighbourhoods
from protocol.secagg.messages import CohortAnnounce
from protocol.secagg.prg import agree, derive, expand

__all__ = [
    "CohortView",
    "add_pair_mask",
    "commit",
    "pair_key",
    "self_mask_key",
    "share_context",
    "share_key",
]


@dataclass(frozen=True)
class CohortView:
    """An announcement with its rules checked and its derived values computed once."""

    announce: CohortAnnounce
    index: dict[str, int]  # device id -> member index
    neighbours: list[frozenset[int]]
    scale: float
    support: npt.NDArray[np.int64]  # (kept,) coordinates every member sends

    @classmethod
    def of(cls, a: CohortAnnounce) -> CohortView:
        n = len(a.members)
        hood = n if a.degree == 0 or a.degree >= n - 1 else a.degree + 1
        # t >= 2 and an honest majority of each neighbourhood: fewer shares reveal nothing
        if not (2 <= a.threshold <= hood and 2 * a.threshold > hood):
            raise SecAggError(
                SecAggReason.BAD_PARAMS,
                f"threshold {a.threshold} unsafe for neighbourhoods of {hood}",
            )
        if a.kept > a.num_params:
            raise SecAggError(SecAggReason.BAD_PARAMS, "kept > num_params")
        return cls(
            announce=a,
            index={m.device_id: i for i, m in enumerate(a.members)},
            neighbours=neighbourhoods(n, a.degree, a.seed),
            scale=fixedpoint.scale_for(a.bits, a.clip, n, a.noise_std),
            support=randomk.select(a.seed, a.num_params, a.kept),
        )

    def neighbour_ids(self, device_id: str) -> list[str]:
        members = self.announce.members
        return [members[j].device_id for j in sorted(self.neighbours[self.index[device_id]])]

    def holder_x(self, device_id: str) -> int:
        return self.index[device_id] + 1  # Shamir x-coordinate; 0 is the secret


def _ctx(cohort: bytes, *ids: str) -> bytes:
    return cohort + b"|" + "|".join(ids).encode()


def pair_key(cohort: bytes, s_sk: bytes, peer_s_pk: bytes, me: str, peer: str) -> bytes:
    low, high = sorted((me, peer))
    return derive(agree(s_sk, peer_s_pk), b"fleetlearn-secagg-pair-mask", _ctx(cohort, low, high))


def self_mask_key(cohort: bytes, b_seed: bytes) -> bytes:
    return derive(b_seed, b"fleetlearn-secagg-self-mask", cohort)


def share_key(cohort: bytes, c_sk: bytes, peer_c_pk: bytes, dealer: str, holder: str) -> bytes:
    return derive(agree(c_sk, peer_c_pk), b"fleetlearn-secagg-share", _ctx(cohort, dealer, holder))


def share_context(cohort: bytes, dealer: str, holder: str) -> bytes:
    return _ctx(cohort, dealer, holder)


def commit(kind: bytes, cohort: bytes, dealer: str, holder: str, value: bytes) -> bytes:
    """SHA-256 commitment to one share: lets the server check what a responder reveals."""
    return hashlib.sha256(kind + b"|" + _ctx(cohort, dealer, holder) + b"|" + value).digest()


def add_pair_mask(
    acc: npt.NDArray[Any], key: bytes, my_index: int, peer_index: int, bits: int
) -> None:
    """acc += sign * PRG(key) in place, mod 2^b (uint arithmetic wraps)."""
    mask = expand(key, acc.shape[0], bits)
    if my_index < peer_index:
        acc += mask
    else:
        acc -= mask


def check_bits(data: bytes, view: CohortView) -> npt.NDArray[Any]:
    dtype = fixedpoint.uint_dtype(view.announce.bits)
    if len(data) != view.announce.kept * dtype.itemsize:
        raise SecAggError(
            SecAggReason.BAD_VECTOR,
            f"masked vector is {len(data)} bytes, want {view.announce.kept} x {dtype.itemsize}",
        )
    return np.frombuffer(data, dtype=dtype)
