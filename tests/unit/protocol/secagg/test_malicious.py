"""Malicious peers, server and relay, played by rewriting messages between the pure machines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from protocol.secagg import fixedpoint
from protocol.secagg.cohort import CohortConfig, CohortPhase, ServerCohort
from protocol.secagg.device import DevicePhase, DevicePolicy, DeviceSession
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.identity import Enrolment
from protocol.secagg.local import Tamper, run_cohort
from protocol.secagg.messages import (
    AnyDown,
    AnyUp,
    CohortAnnounce,
    MaskedInput,
    SecAggJoin,
    SharesMessage,
)

N = 200
ENROL = Enrolment.generate("local")

# X25519 public keys whose exchange with any private key is all zeros (the small subgroup):
# 0, 1, a point of order 8, p - 1, and 0 written with the (ignored) top bit set.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ((1 << 255) - 20).to_bytes(32, "little"),
    bytes(31) + b"\x80",
]


def _deltas(k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"dev{i:02d}": (rng.normal(size=N) * 0.1).astype(np.float32) for i in range(k)}


@pytest.mark.parametrize("which", ["c_pk", "s_pk"])
@pytest.mark.parametrize("key", LOW_ORDER, ids=lambda k: k.hex()[:6] + k.hex()[-2:])
def test_a_join_with_a_low_order_key_is_refused_and_the_cohort_completes(
    which: str, key: bytes
) -> None:
    cfg = CohortConfig("m", N, target_size=6, min_size=3, clip=1.0)
    deltas = _deltas(6)

    def bad_key(device_id: str, msg: AnyUp) -> AnyUp:
        if device_id == "dev03" and isinstance(msg, SecAggJoin):
            if which == "c_pk":
                return dataclasses.replace(msg, c_pk=key)
            return dataclasses.replace(msg, s_pk=key)
        return msg

    run = run_cohort(cfg, deltas, tamper=bad_key)
    assert ("server", "dev03", SecAggReason.BAD_KEY) in run.refused
    result = run.cohort.result
    assert run.cohort.phase is CohortPhase.DONE and result is not None
    assert "dev03" not in run.cohort.members
    honest = [d for d in deltas if d != "dev03"]
    assert list(result.members) == honest
    assert all(run.devices[d].applied for d in honest)


@pytest.mark.parametrize("which", ["c_pk", "s_pk"])
def test_a_device_refuses_an_announce_carrying_a_low_order_key(which: str) -> None:
    """A relay swaps one member's key for zeros in dev00's copy: dev00 sends nothing more."""
    cfg = CohortConfig("m", N, target_size=7, min_size=3, clip=1.0)
    deltas = _deltas(7)
    shared: list[str] = []

    def relay(device_id: str, msg: AnyDown) -> AnyDown:
        if device_id == "dev00" and isinstance(msg, CohortAnnounce):
            members = list(msg.members)
            m = members[3]
            members[3] = (
                dataclasses.replace(m, c_pk=bytes(32))
                if which == "c_pk"
                else dataclasses.replace(m, s_pk=bytes(32))
            )
            return dataclasses.replace(msg, members=tuple(members))
        return msg

    def spy(device_id: str, msg: AnyUp) -> AnyUp:
        if isinstance(msg, SharesMessage):
            shared.append(device_id)
        return msg

    run = run_cohort(cfg, deltas, tamper=spy, tamper_down=relay)
    assert ("dev00", "CohortAnnounce", SecAggReason.BAD_KEY) in run.refused
    assert run.devices["dev00"].phase is DevicePhase.FAILED and "dev00" not in shared
    result = run.cohort.result  # the others finish without dev00 (a drop-out before sharing)
    assert run.cohort.phase is CohortPhase.DONE and result is not None
    assert list(result.members) == [d for d in deltas if d != "dev00"]


def _lower_threshold(device_id: str, msg: AnyDown) -> AnyDown:
    if isinstance(msg, CohortAnnounce):
        return dataclasses.replace(msg, threshold=6)
    return msg


@pytest.mark.parametrize("who", ["server", "relay"])
def test_devices_refuse_a_threshold_below_their_own_minimum(who: str) -> None:
    """t = 6 of 10 has 2t > n, but is below the devices' own 2/3: nobody deals a share."""
    fraction = 0.55 if who == "server" else 2 / 3  # the server's t = 6, or 7 rewritten to 6
    cfg = CohortConfig("m", N, target_size=10, min_size=3, clip=1.0, threshold_fraction=fraction)
    shared: list[str] = []

    def spy(device_id: str, msg: AnyUp) -> AnyUp:
        if isinstance(msg, SharesMessage):
            shared.append(device_id)
        return msg

    relay = _lower_threshold if who == "relay" else None
    run = run_cohort(cfg, _deltas(10), tamper=spy, tamper_down=relay)
    assert shared == [] and run.unmask_requests == 0
    assert run.cohort.phase is CohortPhase.ABANDONED and run.cohort.result is None
    refusals = [r for r in run.refused if r[1] == "CohortAnnounce"]
    assert len(refusals) == 10 and {r[2] for r in refusals} == {SecAggReason.BAD_PARAMS}
    assert all(s.phase is DevicePhase.FAILED for s in run.devices.values())


def test_devices_refuse_a_cohort_smaller_than_their_minimum() -> None:
    cfg = CohortConfig("m", N, target_size=2, min_size=2, clip=1.0)  # t = 2 of 2: 2t > n holds
    run = run_cohort(cfg, _deltas(2))
    assert run.cohort.phase is CohortPhase.ABANDONED and run.cohort.result is None
    assert {r[2] for r in run.refused} == {SecAggReason.BAD_PARAMS}
    # a device configured for smaller cohorts takes part (its own choice, not the server's)
    run = run_cohort(cfg, _deltas(2), policy=DevicePolicy(min_size=2))
    assert run.cohort.phase is CohortPhase.DONE and run.refused == []


def test_a_device_may_accept_a_lower_threshold_from_its_own_config() -> None:
    cfg = CohortConfig("m", N, target_size=10, min_size=3, clip=1.0, threshold_fraction=0.55)
    run = run_cohort(cfg, _deltas(10), policy=DevicePolicy(min_threshold_fraction=0.55))
    assert run.cohort.phase is CohortPhase.DONE and run.refused == []


def test_ten_members_just_over_the_clip_do_not_wrap_the_sum() -> None:
    """float32 clipping of 17.04 e0 to C = 10 gave 10.000000954 > C: ten of them wrapped."""
    cfg = CohortConfig("m", 4, target_size=10, min_size=3, clip=10.0, bits=32)
    spike = np.array([17.04, 0.0, 0.0, 0.0], np.float32)
    run = run_cohort(cfg, {f"dev{i:02d}": spike for i in range(10)})
    result = run.cohort.result
    assert run.cohort.phase is CohortPhase.DONE and result is not None
    assert result.mean[0] == pytest.approx(10.0, abs=1e-5)  # not -10 (or refused)


def _unclipped(extra: np.ndarray, cfg: CohortConfig, members: int) -> Tamper:
    """dev02 adds `extra` to its masked vector: the sum gains `extra`, unclipped."""
    scale = fixedpoint.scale_for(cfg.bits, cfg.clip, members, cfg.noise_std)
    z = fixedpoint.encode(extra, scale, cfg.bits, np.random.default_rng(0))

    def tamper(device_id: str, msg: AnyUp) -> AnyUp:
        if device_id == "dev02" and isinstance(msg, MaskedInput):
            y = np.frombuffer(msg.data, fixedpoint.uint_dtype(cfg.bits)) + z
            return dataclasses.replace(msg, data=y.tobytes())
        return msg

    return tamper


def test_a_member_masking_an_unclipped_vector_gets_its_cohort_refused() -> None:
    cfg = CohortConfig("m", N, target_size=10, min_size=3, clip=10.0)
    extra = np.zeros(N, np.float32)
    extra[:8] = 311.8  # norm 882 against a clip of 10
    run = run_cohort(cfg, _deltas(10), tamper=_unclipped(extra, cfg, 10))
    assert run.cohort.phase is CohortPhase.ABANDONED and run.cohort.result is None
    assert run.cohort.abandon_reason.startswith(SecAggReason.SUM_BOUND)
    assert all(s.applied is False for s in run.devices.values())  # every member told


def test_the_sum_check_cannot_attribute_a_steered_but_bounded_sum() -> None:
    """What it cannot do: a member that adds a vector the cohort's bound still admits passes."""
    cfg = CohortConfig("m", N, target_size=10, min_size=3, clip=10.0)
    extra = np.zeros(N, np.float32)
    extra[0] = 50.0  # 5 C in one chosen direction, the cohort's total stays under 10 C
    run = run_cohort(cfg, _deltas(10), tamper=_unclipped(extra, cfg, 10))
    assert run.cohort.phase is CohortPhase.DONE and run.cohort.result is not None


def test_a_result_before_the_announce_must_name_this_join() -> None:
    """A stale result (an earlier cohort's, replayed or late) must not end the next cohort."""
    cfg = CohortConfig("m", N, target_size=3, min_size=3, clip=1.0)
    earlier = run_cohort(cfg, _deltas(3))
    [(_, stale)] = [o for o in earlier.cohort.results(1) if o[0] == "dev00"]
    fresh = DeviceSession(
        "dev00", "m", ENROL.enrol("dev00")
    )  # joined a new cohort, not yet announced
    with pytest.raises(SecAggError) as err:
        fresh.on_result(stale)  # type: ignore[arg-type]
    assert err.value.reason is SecAggReason.WRONG_COHORT and fresh.phase is DevicePhase.JOINED
    # a cohort abandoned before its announce still reaches the join it was for
    cohort = ServerCohort(cfg, bytes([7]) * 16, 0, bytes(32))
    cohort.add_join(fresh.join())
    [(_, abandoned)] = cohort.close()
    fresh.on_result(abandoned)  # type: ignore[arg-type]
    assert fresh.finished and fresh.applied is False


def test_a_rejoin_with_new_keys_replaces_the_old_join_in_an_open_cohort() -> None:
    cfg = CohortConfig("m", N, target_size=3, min_size=3, clip=1.0)
    cohort = ServerCohort(cfg, bytes(16), 0, bytes(32))
    cohort.add_join(
        DeviceSession("dev00", "m", ENROL.enrol("dev00")).join()
    )  # a session the agent gave up
    again = DeviceSession("dev00", "m", ENROL.enrol("dev00"))
    cohort.add_join(again.join())
    with pytest.raises(SecAggError) as err:
        cohort.add_join(again.join())
    assert err.value.reason is SecAggReason.DUPLICATE
    out = cohort.add_join(DeviceSession("dev01", "m", ENROL.enrol("dev01")).join())
    out += cohort.add_join(DeviceSession("dev02", "m", ENROL.enrol("dev02")).join())
    announce = out[0][1]
    assert isinstance(announce, CohortAnnounce)
    assert announce.members[0].c_pk == again.c_keys.public
    again.on_announce(announce)  # "announced keys are not mine" no more
    assert again.phase is DevicePhase.SHARED
