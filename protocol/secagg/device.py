"""The device's side of one cohort: a pure state machine (no I/O, no clock).

    JOINED --announce--> SHARED --bundle--> READY --mask(delta)--> MASKED --check--> SIGNED
           --unmask--> REVEALED
       any phase --result--> DONE;  any refusal of the server's input --> FAILED (nothing sent)

Safety rules a device enforces whatever the server (or a relay) sends: it takes part only in a
cohort of at least its own `DevicePolicy.min_size` members whose threshold is at least its own
`min_threshold_fraction` of a neighbourhood, whose members' keys are all valid X25519 points,
and whose every member is enrolled and signed the keys announced for it (identity.py) - checked
before it derives a mask or encrypts a share. It signs one survivor list (U3) per cohort, and
reveals shares only for one unmask request per cohort, only for that same list, only if at
least t survivors remain and at least t distinct survivors signed that list (so a server cannot
show different lists to different devices), and never both the self-mask share and the mask-key
share of the same member; its own input is masked before it leaves.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt

from protocol.secagg import fixedpoint, shamir
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.identity import DeviceIdentity
from protocol.secagg.masking import (
    CohortView,
    add_pair_mask,
    commit,
    pair_key,
    self_mask_key,
    share_context,
    share_key,
)
from protocol.secagg.messages import (
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
from protocol.secagg.noise import skellam, skellam_share_mu, wrap
from protocol.secagg.prg import (
    KeyPair,
    check_public_key,
    decrypt_share,
    encrypt_share,
    expand,
    new_keypair,
)

__all__ = ["DevicePhase", "DevicePolicy", "DeviceSession"]

F32 = npt.NDArray[np.float32]


class DevicePhase(Enum):
    JOINED = "joined"
    SHARED = "shared"
    READY = "ready"
    MASKED = "masked"
    SIGNED = "signed"
    REVEALED = "revealed"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class DevicePolicy:
    """The weakest cohort this device joins, from its own config: an announce cannot lower it."""

    min_size: int = 3  # with 2 members each learns the other's input from the sum
    min_threshold_fraction: float = 2 / 3  # t >= ceil(fraction * neighbourhood), as the server's

    def __post_init__(self) -> None:
        if self.min_size < 2:
            raise ValueError(f"min_size must be >= 2, got {self.min_size}")
        if not 0.5 <= self.min_threshold_fraction <= 1.0:
            raise ValueError("min_threshold_fraction must be in [0.5, 1]")

    def min_threshold(self, hood: int) -> int:
        """The least t this device accepts for neighbourhoods of `hood` members."""
        # 1e-9: the same fraction on both sides must give the same t despite float rounding
        return max(2, hood // 2 + 1, math.ceil(self.min_threshold_fraction * hood - 1e-9))

    def check(self, a: CohortAnnounce, hood: int) -> None:
        if len(a.members) < self.min_size:
            raise SecAggError(
                SecAggReason.BAD_PARAMS, f"{len(a.members)} members < this device's {self.min_size}"
            )
        if a.threshold < self.min_threshold(hood):
            raise SecAggError(
                SecAggReason.BAD_PARAMS,
                f"threshold {a.threshold} of {hood} < this device's {self.min_threshold(hood)}",
            )


@dataclass
class DeviceSession:
    device_id: str
    model_id: str
    identity: DeviceIdentity = field(repr=False)
    policy: DevicePolicy = field(default_factory=DevicePolicy)
    c_keys: KeyPair = field(default_factory=new_keypair)
    s_keys: KeyPair = field(default_factory=new_keypair)
    phase: DevicePhase = DevicePhase.JOINED
    view: CohortView | None = None
    applied: bool | None = None  # set by the result
    _b_seed: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _held: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # dealer -> shares
    _holders: tuple[str, ...] = ()
    _complaints: list[str] = field(default_factory=list)
    _u3: tuple[str, ...] = ()  # the survivor list this device signed

    def __post_init__(self) -> None:
        if self.identity.cert.device_id != self.device_id:
            raise ValueError(
                f"identity is {self.identity.cert.device_id!r}, not {self.device_id!r}"
            )

    def join(self) -> SecAggJoin:
        c_pk, s_pk = self.c_keys.public, self.s_keys.public
        cert = self.identity.cert
        return SecAggJoin(
            self.device_id,
            self.model_id,
            c_pk,
            s_pk,
            cert.identity_pk,
            cert.signature,
            self.identity.sign_advert(self.model_id, c_pk, s_pk),
        )

    def _expect(self, phase: DevicePhase, cohort: bytes | None = None) -> CohortView:
        if self.phase is not phase:
            raise SecAggError(SecAggReason.WRONG_PHASE, f"in {self.phase.value}, not {phase.value}")
        assert self.view is not None or phase is DevicePhase.JOINED
        if cohort is not None and self.view is not None and cohort != self.view.announce.cohort_id:
            raise SecAggError(SecAggReason.WRONG_COHORT, "message for another cohort")
        return self.view  # type: ignore[return-value]

    def _fail(self, exc: SecAggError) -> SecAggError:
        self.phase = DevicePhase.FAILED
        return exc

    def on_announce(self, a: CohortAnnounce) -> SharesMessage:
        """Check the cohort, then deal this device's two secrets to its neighbours."""
        self._expect(DevicePhase.JOINED)
        try:
            view = CohortView.of(a)
        except SecAggError as exc:
            raise self._fail(exc) from exc
        me = view.index.get(self.device_id)
        if me is None or a.model_id != self.model_id:
            raise self._fail(SecAggError(SecAggReason.NOT_MEMBER, "not in this cohort"))
        try:
            self.policy.check(a, len(view.neighbours[me]))
        except SecAggError as exc:
            raise self._fail(exc) from exc
        mine = a.members[me]
        if (mine.c_pk, mine.s_pk) != (self.c_keys.public, self.s_keys.public):
            raise self._fail(SecAggError(SecAggReason.BAD_KEY, "announced keys are not mine"))
        for m in a.members:  # an honest server refused these at join: the relay was tampered
            try:
                check_public_key(m.c_pk)
                check_public_key(m.s_pk)
            except SecAggError as exc:
                raise self._fail(SecAggError(exc.reason, f"{m.device_id}: {exc.detail}")) from exc
        for m in a.members:  # before any key is used: every member enrolled and signed its keys
            try:
                self.identity.trust.check_member(m, self.model_id)
            except SecAggError as exc:
                raise self._fail(exc) from exc
        peers = view.neighbour_ids(self.device_id)
        xs = [view.holder_x(p) for p in peers]
        b_shares = shamir.split(self._b_seed, xs, a.threshold)
        sk_shares = shamir.split(self.s_keys.private, xs, a.threshold)
        out = []
        cid = a.cohort_id
        for peer, x in zip(peers, xs, strict=True):
            b = shamir.share_to_bytes(b_shares[x])
            sk = shamir.share_to_bytes(sk_shares[x])
            member = a.members[view.index[peer]]
            key = share_key(cid, self.c_keys.private, member.c_pk, self.device_id, peer)
            out.append(
                ShareOut(
                    peer=peer,
                    ciphertext=encrypt_share(key, b + sk, share_context(cid, self.device_id, peer)),
                    b_hash=commit(b"b", cid, self.device_id, peer, b),
                    sk_hash=commit(b"sk", cid, self.device_id, peer, sk),
                )
            )
        self.view = view
        self.phase = DevicePhase.SHARED
        b_commit = commit(b"seed", cid, self.device_id, self.device_id, self._b_seed)
        return SharesMessage(self.device_id, cid, b_commit, tuple(out))

    def on_bundle(self, bundle: ShareBundle) -> None:
        """Keep the shares dealt to this device; a share that fails becomes a complaint."""
        view = self._expect(DevicePhase.SHARED, bundle.cohort_id)
        cid = view.announce.cohort_id
        holders = set(bundle.holders)
        if self.device_id not in holders or not holders <= view.index.keys():
            raise self._fail(SecAggError(SecAggReason.NOT_MEMBER, "bundle holders not members"))
        if len(holders) < view.announce.threshold:
            raise self._fail(SecAggError(SecAggReason.BELOW_THRESHOLD, "too few holders"))
        mine = set(view.neighbour_ids(self.device_id))
        for s in bundle.shares:
            if s.peer not in holders or s.peer not in mine:
                continue  # only shares from neighbours that are still in count
            dealer = view.announce.members[view.index[s.peer]]
            try:
                key = share_key(cid, self.c_keys.private, dealer.c_pk, s.peer, self.device_id)
                plain = decrypt_share(key, s.ciphertext, share_context(cid, s.peer, self.device_id))
                b, sk = plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :]
                if (
                    len(plain) != 2 * shamir.SHARE_BYTES
                    or commit(b"b", cid, s.peer, self.device_id, b) != s.b_hash
                    or commit(b"sk", cid, s.peer, self.device_id, sk) != s.sk_hash
                ):
                    raise SecAggError(SecAggReason.BAD_SHARE, "share differs from its commitment")
                self._held[s.peer] = (shamir.share_from_bytes(b), shamir.share_from_bytes(sk))
            except SecAggError:
                self._complaints.append(s.peer)
        for peer in sorted((mine & holders) - self._held.keys() - set(self._complaints)):
            self._complaints.append(peer)  # a neighbour in U2 whose share never came
        self._holders = tuple(bundle.holders)
        self.phase = DevicePhase.READY

    def mask(
        self, delta: F32, num_samples: int, rng: np.random.Generator | None = None
    ) -> tuple[MaskedInput, F32]:
        """Mask a flat float32 delta. Returns the message and what the server will count for this
        device ((num_params,) float32: clipped, rounded, zero off the support), for error feedback.
        """
        view = self._expect(DevicePhase.READY)
        try:
            return self._mask(view, delta, num_samples, rng)
        except SecAggError as exc:  # this device cannot take part: it sends nothing more
            raise self._fail(exc) from exc

    def _mask(
        self, view: CohortView, delta: F32, num_samples: int, rng: np.random.Generator | None
    ) -> tuple[MaskedInput, F32]:
        a = view.announce
        if delta.shape != (a.num_params,):
            raise SecAggError(SecAggReason.BAD_VECTOR, f"delta {delta.shape}, model {a.num_params}")
        kept = fixedpoint.clip_l2(np.ascontiguousarray(delta[view.support], np.float32), a.clip)
        z = fixedpoint.encode(kept, view.scale, a.bits, rng or np.random.default_rng())
        sent = np.zeros(a.num_params, np.float32)
        sent[view.support] = fixedpoint.decode_sum(z, view.scale, a.bits).astype(np.float32)
        y = z.copy()  # (kept,) uint, wraps mod 2^b
        if a.noise_std > 0:  # this device's share of the sum's noise, before any mask
            mu = skellam_share_mu(a.noise_std, view.scale, len(a.members))
            y += wrap(skellam(mu, a.kept, rng or np.random.default_rng()), a.bits)
        y += expand(self_mask_key(a.cohort_id, self._b_seed), a.kept, a.bits)
        me = view.index[self.device_id]
        for peer in view.neighbour_ids(self.device_id):
            if peer == self.device_id or peer not in self._holders:
                continue
            other = a.members[view.index[peer]]
            key = pair_key(a.cohort_id, self.s_keys.private, other.s_pk, self.device_id, peer)
            add_pair_mask(y, key, me, view.index[peer], a.bits)
        self.phase = DevicePhase.MASKED
        msg = MaskedInput(
            self.device_id, a.cohort_id, num_samples, y.tobytes(), tuple(self._complaints)
        )
        return msg, sent

    def on_check(self, req: ConsistencyRequest) -> ConsistencySignature:
        """Sign the survivor list (U3) once: the unmask request must carry t signatures on it."""
        view = self._expect(DevicePhase.MASKED, req.cohort_id)
        survivors = set(req.survivors)
        if self.device_id not in survivors or not survivors <= set(self._holders):
            raise self._fail(SecAggError(SecAggReason.UNSAFE_REQUEST, "U3 is not within U2"))
        if len(survivors) < view.announce.threshold:
            raise self._fail(SecAggError(SecAggReason.BELOW_THRESHOLD, "too few survivors"))
        self._u3 = tuple(sorted(survivors))
        self.phase = DevicePhase.SIGNED
        sig = self.identity.sign_consistency(view.announce.cohort_id, self._u3)
        return ConsistencySignature(self.device_id, view.announce.cohort_id, sig)

    def on_unmask(self, req: UnmaskRequest) -> UnmaskResponse:
        """Reveal shares for one safe request: survivors' seeds, dropped members' mask keys."""
        view = self._expect(DevicePhase.SIGNED, req.cohort_id)
        survivors, dropped = set(req.survivors), set(req.dropped)
        if tuple(sorted(survivors)) != self._u3:
            raise self._fail(SecAggError(SecAggReason.UNSAFE_REQUEST, "not the U3 it signed"))
        if (
            survivors & dropped
            or survivors | dropped != set(self._holders)
            or self.device_id not in survivors
        ):
            raise self._fail(SecAggError(SecAggReason.UNSAFE_REQUEST, "sets do not partition U2"))
        a = view.announce
        if len(survivors) < a.threshold:
            raise self._fail(SecAggError(SecAggReason.BELOW_THRESHOLD, "too few survivors"))
        trust = self.identity.trust
        signed = [
            d
            for d, sig in req.signatures.items()
            if d in survivors
            and trust.valid_consistency(a.members[view.index[d]], a.cohort_id, self._u3, sig)
        ]
        if len(signed) < a.threshold:  # dict keys: distinct members
            raise self._fail(
                SecAggError(
                    SecAggReason.BAD_SIGNATURE,
                    f"{len(signed)} valid U3 signatures < threshold {a.threshold}",
                )
            )
        self.phase = DevicePhase.REVEALED  # before building: never answer twice
        b = {d: shamir.share_to_bytes(v[0]) for d, v in self._held.items() if d in survivors}
        sk = {d: shamir.share_to_bytes(v[1]) for d, v in self._held.items() if d in dropped}
        return UnmaskResponse(self.device_id, view.announce.cohort_id, b, sk)

    def on_result(self, result: CohortResult) -> None:
        """The end of this cohort. Before the announce this device knows no cohort id: only a
        result naming this join's key is for it (a stale one must not end the next cohort)."""
        mine = self.s_keys.public
        if self.view is None:
            if result.member_key != mine:
                raise SecAggError(SecAggReason.WRONG_COHORT, "result for another join")
        elif result.cohort_id != self.view.announce.cohort_id or result.member_key not in (
            b"",
            mine,
        ):
            raise SecAggError(SecAggReason.WRONG_COHORT, "result for another cohort")
        self.applied = result.applied
        self.phase = DevicePhase.DONE

    @property
    def finished(self) -> bool:
        return self.phase in (DevicePhase.DONE, DevicePhase.FAILED)
