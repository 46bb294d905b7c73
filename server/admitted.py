"""What an admitted update is: the value types every stage after admission reads.

    AdmittedUpdate   decoded, finite, norm-bounded: a dense (n,) float32 delta
    FusedUpdate      the same, its delta still in codec form (FusedDelta: codes, scales, the clip
                     admission chose), added straight into a buffer by the fused kernels
    Contribution     what a buffer that only sums weighted deltas needs of either

A leaf: it imports the kernels and protocol, nothing of the server above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from protocol.codecs import DecodedParts
from server.kernels.fused import add_parts, scale_delta, sq_norm

__all__ = ["AdmittedUpdate", "Contribution", "FusedDelta", "FusedUpdate"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AdmittedUpdate:
    """An update that passed admission control: decoded, finite, norm-bounded."""

    device_id: str
    seq: int
    base_version: int
    num_samples: int
    delta: np.ndarray  # (n,) float32, local weights - base weights
    members: int = 1  # > 1: a secure-aggregation cohort's mean over this many devices

    def add_into(self, out: np.ndarray, weight: np.float32) -> None:
        """out += delta * weight, in place (out: (n,) float32)."""
        out += self.delta * weight

    def norm(self) -> float:
        """L2 norm of the delta as admitted (clipped)."""
        return float(np.linalg.norm(self.delta))

    def sparse(self, weight: np.float32) -> tuple[np.ndarray, np.ndarray] | None:
        """A dense delta has no sparse form."""
        return None

    def admitted(self) -> AdmittedUpdate:
        return self


class Contribution(Protocol):
    """What a strategy that only sums weighted deltas needs of an update (FedBuff): the delta
    may stay in codec form and be added straight into the buffer (server/kernels/fused.py)."""

    @property
    def device_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def base_version(self) -> int: ...
    @property
    def num_samples(self) -> int: ...
    def add_into(self, out: np.ndarray, weight: np.float32) -> None: ...
    def norm(self) -> float: ...
    def sparse(self, weight: np.float32) -> tuple[np.ndarray, np.ndarray] | None:
        """(positions, delta * weight there) of a top-k delta; None for a dense one."""
        ...

    def admitted(self) -> AdmittedUpdate: ...


@dataclass(frozen=True, slots=True, eq=False)
class FusedDelta:
    """A decoded delta in codec form plus the clip factor admission chose for it."""

    parts: DecodedParts
    clip: float = 1.0  # 1.0 = untouched
    # the L2 norm before the clip when admission already computed it (sq_norm: the value a
    # replay recomputes), so a robust defence's norm does not read 1 MB of codes twice
    raw_norm: float | None = None

    def add_into(self, out: F32, weight: np.float32) -> None:
        """out += (delta * clip) * weight, in place, each element once. out: (n,) float32."""
        add_parts(out, self.parts, self.clip, weight)

    def sparse(self, weight: np.float32) -> tuple[np.ndarray, np.ndarray] | None:
        """(positions (k,) int64, values (k,) float32) of a top-k delta, clipped and weighted
        with the float32 operations `add_into` does; None for a dense delta."""
        p = self.parts
        if p.index is None:
            return None
        vals = p.kept_values()  # (k,) float32
        if self.clip != 1.0:
            vals = vals * np.float32(self.clip)
        return p.index, vals * np.float32(weight)

    def dense(self) -> F32:
        """(n,) float32: exactly the delta the unfused path applied (decoded, then clipped)."""
        return scale_delta(self.parts.dense(), self.clip)


@dataclass(frozen=True, slots=True, eq=False)
class FusedUpdate:
    """An admitted update whose delta stays in codec form (a `Contribution`)."""

    device_id: str
    seq: int
    base_version: int
    num_samples: int
    delta: FusedDelta

    def add_into(self, out: F32, weight: np.float32) -> None:
        self.delta.add_into(out, weight)

    def norm(self) -> float:
        """L2 norm of the delta as admitted (clipped), from its codes: no (n,) expansion."""
        d = self.delta
        raw = math.sqrt(sq_norm(d.parts)) if d.raw_norm is None else d.raw_norm
        return raw * d.clip

    def sparse(self, weight: np.float32) -> tuple[np.ndarray, np.ndarray] | None:
        return self.delta.sparse(weight)

    def admitted(self) -> AdmittedUpdate:
        """The dense form, for strategies that keep or inspect the whole vector."""
        return AdmittedUpdate(
            self.device_id, self.seq, self.base_version, self.num_samples, self.delta.dense()
        )
