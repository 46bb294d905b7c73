"""A relay (or server) that substitutes its own X25519 keys in the announce, played in full.

The relay gives the target its own keys for every peer and gives every peer its own key for the
target. Unsigned, the target deals all its shares to the relay and masks with pair keys the relay
knows: the relay reconstructs the self-mask seed and unmasks the target's exact update. Signed,
every device that received a rewritten announce refuses before it derives or encrypts anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from protocol.secagg import fixedpoint, shamir
from protocol.secagg.cohort import CohortConfig
from protocol.secagg.device import DevicePhase
from protocol.secagg.errors import SecAggReason
from protocol.secagg.identity import Enrolment
from protocol.secagg.local import run_cohort
from protocol.secagg.masking import (
    CohortView,
    add_pair_mask,
    pair_key,
    self_mask_key,
    share_context,
    share_key,
)
from protocol.secagg.messages import (
    AnyDown,
    AnyUp,
    CohortAnnounce,
    ConsistencyRequest,
    MaskedInput,
    SecAggJoin,
    ShareBundle,
    SharesMessage,
    UnmaskRequest,
)
from protocol.secagg.prg import KeyPair, decrypt_share, expand, new_keypair

N = 200
TARGET = "dev03"


def _deltas(k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {f"dev{i:02d}": (rng.normal(size=N) * 0.1).astype(np.float32) for i in range(k)}


class KeySwapRelay:
    """Rewrites announces in transit and tries to unmask TARGET's input from what it sees."""

    def __init__(self, ids: list[str]) -> None:
        self.c = {d: new_keypair() for d in ids}  # relay's c keys, one per impersonated member
        self.s = {d: new_keypair() for d in ids}
        self.real: CohortAnnounce | None = None
        self.holders: tuple[str, ...] = ()
        self.shares: SharesMessage | None = None
        self.masked: MaskedInput | None = None

    def _swap(self, m: object, d: str) -> object:
        c: KeyPair = self.c[d]
        s: KeyPair = self.s[d]
        return dataclasses.replace(m, c_pk=c.public, s_pk=s.public)  # type: ignore[type-var]

    def down(self, device_id: str, msg: AnyDown) -> AnyDown:
        if isinstance(msg, CohortAnnounce):
            self.real = msg
            members = tuple(
                self._swap(m, m.device_id)
                if (device_id == TARGET) != (m.device_id == TARGET)
                else m
                for m in msg.members
            )
            return dataclasses.replace(msg, members=members)  # type: ignore[arg-type]
        if isinstance(msg, ShareBundle) and device_id == TARGET:
            self.holders = msg.holders
        return msg

    def up(self, device_id: str, msg: AnyUp) -> AnyUp:
        if device_id == TARGET and isinstance(msg, SharesMessage):
            self.shares = msg
        if device_id == TARGET and isinstance(msg, MaskedInput):
            self.masked = msg
        return msg

    def recover(self) -> np.ndarray | None:
        """TARGET's fixed-point input, decoded, on the support; None if the relay lacks it."""
        if self.real is None or self.shares is None or self.masked is None:
            return None
        a, view = self.real, CohortView.of(self.real)
        cid, me = a.cohort_id, a.members[view.index[TARGET]]
        b_shares = {}
        for s in self.shares.shares:  # every share TARGET dealt a peer went to the relay
            if s.peer == TARGET:
                continue
            key = share_key(cid, self.c[s.peer].private, me.c_pk, TARGET, s.peer)
            plain = decrypt_share(key, s.ciphertext, share_context(cid, TARGET, s.peer))
            b_shares[view.holder_x(s.peer)] = shamir.share_from_bytes(plain[: shamir.SHARE_BYTES])
        b_seed = shamir.reconstruct(b_shares, a.threshold)
        dtype = fixedpoint.uint_dtype(a.bits)
        y = np.frombuffer(self.masked.data, dtype).copy()  # (kept,) wraps mod 2^b
        y -= expand(self_mask_key(cid, b_seed), a.kept, a.bits)
        for peer in view.neighbour_ids(TARGET):
            if peer == TARGET or peer not in self.holders:
                continue
            key = pair_key(cid, self.s[peer].private, me.s_pk, TARGET, peer)
            add_pair_mask(y, key, view.index[peer], view.index[TARGET], a.bits)  # sign flipped
        return fixedpoint.decode_sum(y, view.scale, a.bits)


@pytest.mark.parametrize("who", ["relay", "server"])
def test_a_relay_substituting_keys_in_the_announce_learns_nothing(who: str) -> None:
    """The server plays it too: it rewrites its own announce and checks no signature itself."""
    cfg = CohortConfig("m", N, target_size=7, min_size=3, clip=1.0)
    deltas = _deltas(7)
    relay = KeySwapRelay(list(deltas))
    run = run_cohort(
        cfg, deltas, tamper=relay.up, tamper_down=relay.down, check_at_server=who == "relay"
    )
    recovered = relay.recover()
    if recovered is not None:  # what the relay got; on unsigned keys, this was the target's input
        view = CohortView.of(relay.real)  # type: ignore[arg-type]
        assert not np.allclose(recovered, run.sent[TARGET][view.support], atol=1e-6)
    assert recovered is None and relay.shares is None and relay.masked is None
    # every device shown a rewritten announce refused it before sending anything more
    refusals = {(d, why) for d, what, why in run.refused if what == "CohortAnnounce"}
    assert refusals == {(d, SecAggReason.BAD_SIGNATURE) for d in deltas}
    assert all(s.phase is DevicePhase.FAILED for s in run.devices.values())
    assert run.unmask_requests == 0 and run.cohort.result is None


def _spy(sent: list[tuple[str, str]]) -> Callable[[str, AnyUp], AnyUp]:
    def spy(device_id: str, msg: AnyUp) -> AnyUp:
        sent.append((device_id, type(msg).__name__))
        return msg

    return spy


@pytest.mark.parametrize("forgery", ["advert_sig", "cert_sig", "other_enrolment"])
def test_a_member_with_a_forged_or_unenrolled_identity_is_refused(forgery: str) -> None:
    """dev02's keys are signed by nobody, or its identity by a key the fleet never trusted."""
    cfg = CohortConfig("m", N, target_size=6, min_size=3, clip=1.0)
    deltas = _deltas(6)
    identities = {}
    if forgery == "other_enrolment":
        identities["dev02"] = Enrolment.generate("local").enrol("dev02")

    def forge(device_id: str, msg: AnyUp) -> AnyUp:
        if device_id == "dev02" and isinstance(msg, SecAggJoin) and forgery != "other_enrolment":
            return dataclasses.replace(msg, **{forgery: bytes(64)})
        return msg

    # an honest server refuses the join: the others finish without dev02
    run = run_cohort(cfg, deltas, tamper=forge, identities=identities)
    assert ("server", "dev02", SecAggReason.BAD_SIGNATURE) in run.refused
    result = run.cohort.result
    assert result is not None and "dev02" not in result.members and len(result.members) == 5
    # a server that relays it anyway: every device refuses the cohort and sends nothing more
    sent: list[tuple[str, str]] = []
    spy = _spy(sent)
    run = run_cohort(
        cfg,
        deltas,
        tamper=lambda d, m: spy(d, forge(d, m)),
        identities=identities,
        check_at_server=False,
    )
    refusals = {(d, why) for d, what, why in run.refused if what == "CohortAnnounce"}
    assert refusals == {(d, SecAggReason.BAD_SIGNATURE) for d in deltas}
    assert {kind for _, kind in sent} == {"SecAggJoin"} and run.cohort.result is None


def _split_u3(victim: str, group_b: set[str]) -> Callable[[str, AnyDown], AnyDown]:
    """A server that shows group B a U3 without `victim` (to get its mask-key shares) and the
    others the true U3 (to get its self-mask seed shares): both together unmask the victim."""

    def server(device_id: str, msg: AnyDown) -> AnyDown:
        if device_id not in group_b:
            return msg
        if isinstance(msg, ConsistencyRequest):
            return dataclasses.replace(
                msg, survivors=tuple(d for d in msg.survivors if d != victim)
            )
        if isinstance(msg, UnmaskRequest):
            survivors = tuple(d for d in msg.survivors if d != victim)
            return dataclasses.replace(msg, survivors=survivors, dropped=(*msg.dropped, victim))
        return msg

    return server


def test_a_server_showing_two_survivor_lists_gets_no_share_revealed() -> None:
    cfg = CohortConfig("m", N, target_size=10, min_size=3, clip=1.0)  # t = 7
    deltas = _deltas(10)
    ids = list(deltas)
    sent: list[tuple[str, str]] = []
    server = _split_u3("dev05", set(ids[:5]))  # 5 devices see each list: neither has t = 7
    run = run_cohort(cfg, deltas, tamper=_spy(sent), tamper_down=server, check_at_server=False)
    assert sum(kind == "ConsistencySignature" for _, kind in sent) == 10  # both lists signed
    assert not any(kind == "UnmaskResponse" for _, kind in sent)  # and nobody revealed
    refusals = {(d, why) for d, what, why in run.refused if what == "UnmaskRequest"}
    assert refusals == {(d, SecAggReason.BAD_SIGNATURE) for d in ids}
    assert run.cohort.result is None
    # an honest server with a trust refuses the mismatched signatures itself and abandons
    run = run_cohort(cfg, deltas, tamper_down=server)
    assert run.cohort.result is None and run.unmask_requests == 0
    assert sum(why is SecAggReason.BAD_SIGNATURE for _, _, why in run.refused) == 5


def test_an_unmask_request_needs_t_valid_signatures_on_the_list_the_device_signed() -> None:
    cfg = CohortConfig("m", N, target_size=6, min_size=3, clip=1.0)  # t = 4

    def strip(keep: int, forge: bool) -> Callable[[str, AnyDown], AnyDown]:
        def server(device_id: str, msg: AnyDown) -> AnyDown:
            if isinstance(msg, UnmaskRequest):
                sigs = dict(list(msg.signatures.items())[:keep])
                if forge:  # one more "signature" from a survivor, over nothing it signed
                    sigs[msg.survivors[-1]] = bytes(64)
                return dataclasses.replace(msg, signatures=sigs)
            return msg

        return server

    for keep, forge in [(3, False), (3, True), (0, True)]:
        sent: list[tuple[str, str]] = []
        run = run_cohort(cfg, _deltas(6), tamper=_spy(sent), tamper_down=strip(keep, forge))
        assert not any(kind == "UnmaskResponse" for _, kind in sent), (keep, forge)
        assert {why for _, what, why in run.refused if what == "UnmaskRequest"} == {
            SecAggReason.BAD_SIGNATURE
        }
    run = run_cohort(cfg, _deltas(6), tamper_down=strip(4, False))  # exactly t: enough
    assert run.cohort.result is not None and len(run.cohort.result.members) == 6


@pytest.mark.parametrize("degree", [0, 8])
def test_signed_cohorts_complete_with_drop_outs(degree: int) -> None:
    """Complete graph: one drop-out in every phase. SecAgg+ ring of 9: two late ones (four can
    leave a neighbourhood of 9 with fewer than its t = 6 revealers, by design)."""
    cfg = CohortConfig("m", N, target_size=12, min_size=3, clip=1.0, degree=degree)
    deltas = _deltas(12)
    ids = list(deltas)
    early = {"drop_before_shares": {ids[0]}, "drop_before_masked": {ids[1]}} if not degree else {}
    run = run_cohort(
        cfg,
        deltas,
        drop_before_check={ids[2]},  # masked: counted, but never asked to reveal
        drop_before_reveal={ids[3]},
        **early,  # type: ignore[arg-type]
    )
    result = run.cohort.result
    assert run.refused == [] and result is not None
    counted = ids[2:] if not degree else ids
    assert list(result.members) == counted and result.excluded == ()
    expected = sum(run.sent[d].astype(np.float64) for d in counted) / len(counted)
    np.testing.assert_allclose(result.mean, expected, atol=1e-6)
    assert all(run.devices[d].applied for d in counted)
    assert run.devices[ids[2]].phase is DevicePhase.DONE  # told, though it never signed
