"""The server's side of one cohort: a pure state machine (no I/O, no clock).

    OPEN --K joins or close()--> SHARING --all shares or close()--> MASKING
         --all masked or close()--> CHECKING --all signed or close()--> UNMASKING
         --all reveals or close()--> DONE | ABANDONED

`close()` is the caller's deadline for the current phase: it proceeds with whoever answered.
Every handler returns the messages to send as (device_id, message) pairs. Fail closed: with
fewer than t members left the cohort is ABANDONED before any unmask request goes out, so no
share is revealed and nothing is applied. A responder whose revealed share differs from the
dealer's commitment is excluded (all its shares ignored); a dealer a member complained about is
treated as dropped (its masked input is discarded, its mask key reconstructed instead).

Consistency round (Bonawitz et al. 2017, ConsistencyCheck): the survivors U3 (whose masked
inputs count) are sent to each of them to sign; the unmask request goes to those that signed,
carrying the signatures, and devices reveal nothing unless at least t survivors signed the same
U3. With a `Trust` (the fleet's enrolment key) the server refuses a join whose identity or key
signature fails and a U3 signature that fails, so one bad member cannot make every honest
device refuse the cohort; devices check the same signatures themselves whatever the server does.
The server keeps each masked vector until unmasking (K x kept x b/8 bytes).

Input validation under masking (`sum_bound`): the server sees only the sum, so the one check it
can make is on the sum. An unmasked sum whose L2 norm exceeds what its counted members could
reach with clipped inputs (K C, plus rounding and noise slack) is refused (SUM_BOUND: nothing
applied, every member told), so one member masking an unclipped vector cannot get its cohort
applied. What it cannot give: it bounds the cohort's total, not each member's share of it, so
one member can still push the sum in a direction of its choosing by up to K C minus the honest
members' total (at least C), and nobody learns who did; per-member bounds under masking need
zero-knowledge range proofs, which this protocol does not have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.secagg import fixedpoint, shamir
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.identity import Trust
from protocol.secagg.masking import (
    CohortView,
    add_pair_mask,
    check_bits,
    commit,
    pair_key,
    self_mask_key,
)
from protocol.secagg.messages import (
    AnyDown,
    CohortAnnounce,
    CohortResult,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    SecAggJoin,
    ShareBundle,
    ShareOut,
    SharesMessage,
    UnmaskRequest,
    UnmaskResponse,
)
from protocol.secagg.prg import check_public_key, expand, public_from_private

__all__ = ["CohortConfig", "CohortPhase", "CohortSum", "ServerCohort", "sum_bound"]

Outgoing = list[tuple[str, AnyDown]]


class CohortPhase(Enum):
    OPEN = "open"
    SHARING = "sharing"
    MASKING = "masking"
    CHECKING = "checking"
    UNMASKING = "unmasking"
    DONE = "done"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class CohortConfig:
    model_id: str
    num_params: int
    target_size: int = 10  # K: one FedBuff buffer
    min_size: int = 3  # a cohort closed with fewer joiners is abandoned
    threshold_fraction: float = 2 / 3  # t = ceil(fraction * n): tolerates 1/3 drop-out
    bits: int = 32  # 16 halves the bytes; 32 keeps rounding noise far below the update
    clip: float = 10.0  # L2 bound per device (fixed point needs one; DP clip when DP is on)
    kept_fraction: float = 1.0  # shared-seed random-k; 1.0 sends every coordinate
    degree: int = 0  # SecAgg+ neighbourhood degree; 0 = complete graph
    noise_std: float = 0.0  # distributed Skellam noise std on the cohort's sum (noise.py)

    def __post_init__(self) -> None:
        fixedpoint.scale_for(self.bits, self.clip, self.target_size, self.noise_std)
        if not 2 <= self.min_size <= self.target_size:
            raise ValueError(f"min_size must be in [2, target_size], got {self.min_size}")
        if not 0.5 < self.threshold_fraction <= 1.0:
            raise ValueError("threshold_fraction must be in (0.5, 1]")
        if not 0.0 < self.kept_fraction <= 1.0:
            raise ValueError("kept_fraction must be in (0, 1]")

    def threshold(self, n: int) -> int:
        hood = n if self.degree == 0 or self.degree >= n - 1 else self.degree + 1
        return max(2, hood // 2 + 1, math.ceil(self.threshold_fraction * hood))


@dataclass(frozen=True)
class CohortSum:
    """The unmasked result: the mean of the included members' fixed-point updates."""

    cohort_id: bytes
    base_version: int
    mean: npt.NDArray[np.float32]  # (num_params,), zero off the random-k support
    total: npt.NDArray[Any]  # (kept,) uint: the exact sum in Z_{2^b} of the included members
    members: tuple[str, ...]
    num_samples: int
    excluded: tuple[str, ...]  # responders or dealers caught with bad shares


@dataclass
class ServerCohort:
    config: CohortConfig
    cohort_id: bytes  # 16 bytes
    base_version: int
    seed: bytes  # 32 bytes: random-k support and SecAgg+ ring
    trust: Trust | None = None  # None: member signatures are left to the devices alone
    phase: CohortPhase = CohortPhase.OPEN
    view: CohortView | None = None
    result: CohortSum | None = None
    abandon_reason: str = ""
    _joins: dict[str, SecAggJoin] = field(default_factory=dict)
    _shares: dict[str, SharesMessage] = field(default_factory=dict)
    _u2: tuple[str, ...] = ()
    _masked: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    _samples: dict[str, int] = field(default_factory=dict)
    _complaints: set[str] = field(default_factory=set)
    _survivors: tuple[str, ...] = ()
    _dropped: tuple[str, ...] = ()
    _signatures: dict[str, bytes] = field(default_factory=dict)  # U3 signatures, by survivor
    _reveals: dict[str, UnmaskResponse] = field(default_factory=dict)

    # --- inputs -------------------------------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._joins)

    def _expect(self, phase: CohortPhase, device_id: str, cohort: bytes | None) -> None:
        if self.phase is not phase:
            raise SecAggError(SecAggReason.WRONG_PHASE, f"cohort is {self.phase.value}")
        if cohort is not None and cohort != self.cohort_id:
            raise SecAggError(SecAggReason.WRONG_COHORT, "message for another cohort")
        if phase is not CohortPhase.OPEN and device_id not in self._joins:
            raise SecAggError(SecAggReason.NOT_MEMBER, f"{device_id} is not a member")

    def add_join(self, join: SecAggJoin) -> Outgoing:
        self._expect(CohortPhase.OPEN, join.device_id, None)
        old = self._joins.get(join.device_id)
        if old is not None and (old.c_pk, old.s_pk) == (join.c_pk, join.s_pk):
            raise SecAggError(SecAggReason.DUPLICATE, f"{join.device_id} already joined")
        # new keys from a member still waiting: its agent began a new session; the latest wins
        # (the old keys would be announced, and refused by the device as not its own)
        if join.model_id != self.config.model_id:
            raise SecAggError(SecAggReason.WRONG_COHORT, f"model {join.model_id!r}")
        check_public_key(join.c_pk)  # BAD_KEY: never relayed, so it cannot block the cohort
        check_public_key(join.s_pk)
        if self.trust is not None:  # BAD_SIGNATURE: the same, for an unenrolled or forged join
            self.trust.check_member(join.member(), self.config.model_id)
        self._joins[join.device_id] = join
        return self._announce() if len(self._joins) >= self.config.target_size else []

    def on_shares(self, msg: SharesMessage) -> Outgoing:
        self._expect(CohortPhase.SHARING, msg.device_id, msg.cohort_id)
        assert self.view is not None
        if msg.device_id in self._shares:
            raise SecAggError(SecAggReason.DUPLICATE, "shares already sent")
        if sorted(s.peer for s in msg.shares) != sorted(self.view.neighbour_ids(msg.device_id)):
            raise SecAggError(SecAggReason.BAD_SHARE, "shares not addressed to the neighbours")
        self._shares[msg.device_id] = msg
        return self._relay() if len(self._shares) == len(self._joins) else []

    def on_masked(self, msg: MaskedInput) -> Outgoing:
        self._expect(CohortPhase.MASKING, msg.device_id, msg.cohort_id)
        assert self.view is not None
        if msg.device_id not in self._u2 or msg.device_id in self._masked:
            raise SecAggError(SecAggReason.DUPLICATE, "not expected or already masked")
        self._masked[msg.device_id] = check_bits(msg.data, self.view)
        self._samples[msg.device_id] = msg.num_samples
        self._complaints.update(c for c in msg.complaints if c in self._u2)
        return self._request_check() if len(self._masked) == len(self._u2) else []

    def on_consistency(self, msg: ConsistencySignature) -> Outgoing:
        self._expect(CohortPhase.CHECKING, msg.device_id, msg.cohort_id)
        assert self.view is not None
        if msg.device_id not in self._survivors or msg.device_id in self._signatures:
            raise SecAggError(SecAggReason.DUPLICATE, "not asked or already signed")
        member = self.view.announce.members[self.view.index[msg.device_id]]
        if self.trust is not None and not self.trust.valid_consistency(
            member, self.cohort_id, self._survivors, msg.signature
        ):
            raise SecAggError(SecAggReason.BAD_SIGNATURE, f"{msg.device_id}'s U3 signature")
        self._signatures[msg.device_id] = msg.signature
        return self._request_unmask() if len(self._signatures) == len(self._survivors) else []

    def on_reveal(self, msg: UnmaskResponse) -> Outgoing:
        self._expect(CohortPhase.UNMASKING, msg.device_id, msg.cohort_id)
        if msg.device_id not in self._signatures or msg.device_id in self._reveals:
            raise SecAggError(SecAggReason.DUPLICATE, "not asked or already revealed")
        self._reveals[msg.device_id] = msg
        return self._finish() if len(self._reveals) == len(self._signatures) else []

    def close(self) -> Outgoing:
        """The deadline of the current phase passed: continue with whoever answered."""
        step = {
            CohortPhase.OPEN: self._announce,
            CohortPhase.SHARING: self._relay,
            CohortPhase.MASKING: self._request_check,
            CohortPhase.CHECKING: self._request_unmask,
            CohortPhase.UNMASKING: self._finish,
        }.get(self.phase)
        return step() if step else []

    def results(self, server_version: int) -> Outgoing:
        """The closing message for every member: applied only to those the sum counted."""
        counted = set(self.result.members) if self.result is not None else set()
        out: Outgoing = []
        for d in self._joins:
            applied = self.phase is CohortPhase.DONE and d in counted
            reason = "ok" if applied else (self.abandon_reason or "not counted: dropped")
            key = self._joins[d].s_pk
            out.append((d, CohortResult(self.cohort_id, applied, reason, server_version, key)))
        return out

    # --- phase transitions --------------------------------------------------------------------

    def _abandon(self, reason: str) -> Outgoing:
        self.phase = CohortPhase.ABANDONED
        self.abandon_reason = reason
        self._masked.clear()
        return self.results(self.base_version)

    def _announce(self) -> Outgoing:
        n = len(self._joins)
        if n < self.config.min_size:
            return self._abandon(f"{SecAggReason.BELOW_THRESHOLD}: {n} joined")
        a = CohortAnnounce(
            cohort_id=self.cohort_id,
            model_id=self.config.model_id,
            base_version=self.base_version,
            num_params=self.config.num_params,
            kept=max(1, round(self.config.kept_fraction * self.config.num_params)),
            bits=self.config.bits,
            clip=self.config.clip,
            threshold=self.config.threshold(n),
            degree=self.config.degree,
            seed=self.seed,
            noise_std=self.config.noise_std,
            members=tuple(j.member() for j in self._joins.values()),
        )
        self.view = CohortView.of(a)
        self.phase = CohortPhase.SHARING
        return [(d, a) for d in self._joins]

    def _relay(self) -> Outgoing:
        assert self.view is not None
        self._u2 = tuple(d for d in self._joins if d in self._shares)
        if len(self._u2) < self.view.announce.threshold:
            return self._abandon(f"{SecAggReason.BELOW_THRESHOLD}: {len(self._u2)} shared")
        inbox: dict[str, list[ShareOut]] = {d: [] for d in self._u2}
        for dealer in self._u2:
            for s in self._shares[dealer].shares:
                if s.peer in inbox:
                    inbox[s.peer].append(ShareOut(dealer, s.ciphertext, s.b_hash, s.sk_hash))
        self.phase = CohortPhase.MASKING
        return [(d, ShareBundle(self.cohort_id, self._u2, tuple(inbox[d]))) for d in self._u2]

    def _request_check(self) -> Outgoing:
        assert self.view is not None
        survivors = tuple(d for d in self._u2 if d in self._masked and d not in self._complaints)
        if len(survivors) < self.view.announce.threshold:
            return self._abandon(f"{SecAggReason.BELOW_THRESHOLD}: {len(survivors)} masked")
        self._survivors = survivors
        self._dropped = tuple(d for d in self._u2 if d not in survivors)
        self.phase = CohortPhase.CHECKING
        req = ConsistencyRequest(self.cohort_id, survivors)
        return [(d, req) for d in survivors]

    def _request_unmask(self) -> Outgoing:
        assert self.view is not None
        if len(self._signatures) < self.view.announce.threshold:
            return self._abandon(f"{SecAggReason.BELOW_THRESHOLD}: {len(self._signatures)} signed")
        self.phase = CohortPhase.UNMASKING
        sigs = dict(self._signatures)
        req = UnmaskRequest(self.cohort_id, self._survivors, self._dropped, sigs)
        return [(d, req) for d in self._survivors if d in sigs]

    def _finish(self) -> Outgoing:
        try:
            self.result = self._unmask()
        except SecAggError as exc:
            return self._abandon(str(exc))
        self.phase = CohortPhase.DONE
        self._masked.clear()
        return []  # the caller applies the sum, then sends results(new_version)

    # --- unmasking ----------------------------------------------------------------------------

    def _valid_shares(
        self, kind: bytes, secrets_of: tuple[str, ...]
    ) -> tuple[dict[str, dict[int, int]], set[str]]:
        """Revealed shares that match their dealer's commitment, and the responders that lied."""
        assert self.view is not None
        cid = self.cohort_id
        got: dict[str, dict[int, int]] = {d: {} for d in secrets_of}
        liars: set[str] = set()
        commitments = {
            (dealer, s.peer): (s.b_hash if kind == b"b" else s.sk_hash)
            for dealer in secrets_of
            for s in self._shares[dealer].shares
        }
        for responder, msg in self._reveals.items():
            revealed: Mapping[str, bytes] = msg.b_shares if kind == b"b" else msg.sk_shares
            for dealer, value in revealed.items():
                want = commitments.get((dealer, responder))
                if dealer not in got:
                    continue
                if want is None or commit(kind, cid, dealer, responder, value) != want:
                    liars.add(responder)
                    continue
                got[dealer][self.view.holder_x(responder)] = shamir.share_from_bytes(value)
        return got, liars

    def _unmask(self) -> CohortSum:
        view = self.view
        assert view is not None
        a = view.announce
        b_got, liars_b = self._valid_shares(b"b", self._survivors)
        sk_got, liars_sk = self._valid_shares(b"sk", self._dropped)
        liars = liars_b | liars_sk
        liar_x = {view.holder_x(d) for d in liars}
        total = np.zeros(a.kept, fixedpoint.uint_dtype(a.bits))  # (kept,) wraps mod 2^b
        for u in self._survivors:
            total += self._masked[u]
            shares = {x: y for x, y in b_got[u].items() if x not in liar_x}
            b_seed = shamir.reconstruct(shares, a.threshold)
            if commit(b"seed", self.cohort_id, u, u, b_seed) != self._shares[u].b_commit:
                raise SecAggError(SecAggReason.RECONSTRUCTION, f"self-mask seed of {u}")
            total -= expand(self_mask_key(self.cohort_id, b_seed), a.kept, a.bits)
        for d in self._dropped:
            shares = {x: y for x, y in sk_got[d].items() if x not in liar_x}
            s_sk = shamir.reconstruct(shares, a.threshold)
            member = a.members[view.index[d]]
            if public_from_private(s_sk) != member.s_pk:
                raise SecAggError(SecAggReason.RECONSTRUCTION, f"mask key of {d}")
            for u in view.neighbour_ids(d):
                if u in self._survivors:  # u added sign(u, d) * PRG(s_ud): take it back
                    key = pair_key(self.cohort_id, s_sk, a.members[view.index[u]].s_pk, d, u)
                    add_pair_mask(total, key, view.index[d], view.index[u], a.bits)
        real = fixedpoint.decode_sum(total, view.scale, a.bits)  # (kept,) float64 sum
        bound = sum_bound(a, view.scale, len(self._survivors))
        norm = float(np.linalg.norm(real))
        if not norm <= bound:
            raise SecAggError(
                SecAggReason.SUM_BOUND, f"sum norm {norm:.4g} > {bound:.4g} for its members"
            )
        mean = np.zeros(a.num_params, np.float32)
        mean[view.support] = (real / len(self._survivors)).astype(np.float32)
        return CohortSum(
            cohort_id=self.cohort_id,
            base_version=self.base_version,
            mean=mean,
            total=total,
            members=self._survivors,
            num_samples=sum(self._samples[u] for u in self._survivors),
            excluded=tuple(sorted(liars | self._complaints)),
        )


def sum_bound(a: CohortAnnounce, scale: float, counted: int) -> float:
    """The largest L2 norm `counted` honest members' decoded sum can have: each clipped input
    has norm <= C, stochastic rounding adds < 1 unit (1 / s) per coordinate and member, and
    the distributed noise of std sigma per coordinate exceeds sigma (sqrt(kept) + 10) in norm
    with probability below e^-50 (Gaussian concentration; Skellam tails are no heavier)."""
    rounding = counted * math.sqrt(a.kept) / scale
    noise = a.noise_std * (math.sqrt(a.kept) + 10.0)
    return counted * a.clip + rounding + noise
