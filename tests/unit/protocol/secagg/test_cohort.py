"""Both state machines together, every message through its codec, no broker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from protocol.secagg import fixedpoint
from protocol.secagg.cohort import CohortConfig, CohortPhase, ServerCohort
from protocol.secagg.device import DevicePhase, DeviceSession
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.identity import Enrolment
from protocol.secagg.local import run_cohort
from protocol.secagg.messages import (
    AnyUp,
    ConsistencyRequest,
    MaskedInput,
    SharesMessage,
    UnmaskRequest,
    UnmaskResponse,
)
from protocol.secagg.shamir import SHARE_BYTES

N = 500
ENROL = Enrolment.generate("local")


def _deltas(k: int, seed: int = 0, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"dev{i:02d}": (rng.normal(size=n) * 0.1).astype(np.float32) for i in range(k)}


def _rngs(ids: list[str]) -> dict[str, np.random.Generator]:
    return {d: np.random.default_rng(100 + i) for i, d in enumerate(ids)}


def _plain_sum(
    cfg: CohortConfig, deltas: dict[str, np.ndarray], members: list[str], n: int
) -> np.ndarray:
    """The fixed-point sum computed in the clear with the same rounding draws."""
    run = run_cohort(cfg, {d: deltas[d] for d in deltas}, rngs=_rngs(list(deltas)))
    view = run.cohort.view
    assert view is not None
    rngs = _rngs(list(deltas))
    total = np.zeros(view.announce.kept, fixedpoint.uint_dtype(cfg.bits))
    for d in members:
        kept = fixedpoint.clip_l2(deltas[d][view.support], cfg.clip)
        total += fixedpoint.encode(
            kept, fixedpoint.scale_for(cfg.bits, cfg.clip, n), cfg.bits, rngs[d]
        )
    return total


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("kept_fraction", [1.0, 0.1])
def test_unmasked_sum_equals_plain_fixed_point_sum_exactly(bits: int, kept_fraction: float) -> None:
    cfg = CohortConfig(
        "m", N, target_size=8, min_size=3, bits=bits, clip=1.0, kept_fraction=kept_fraction
    )
    deltas = _deltas(8)
    run = run_cohort(cfg, deltas, rngs=_rngs(list(deltas)))
    assert run.cohort.phase is CohortPhase.DONE and run.cohort.result is not None
    expected = _plain_sum(cfg, deltas, list(deltas), 8)
    np.testing.assert_array_equal(run.cohort.result.total, expected)
    # and the float mean is that sum / (scale * members), close to the true mean
    np.testing.assert_allclose(
        run.cohort.result.mean, sum(run.sent.values()) / 8, rtol=0, atol=1e-6
    )
    if kept_fraction == 1.0:
        clipped = [fixedpoint.clip_l2(d, 1.0) for d in deltas.values()]  # norms ~2.2 > C = 1
        atol = 2e-3 if bits == 16 else 1e-6
        np.testing.assert_allclose(run.cohort.result.mean, sum(clipped) / 8, atol=atol)
    assert all(s.phase is DevicePhase.DONE and s.applied for s in run.devices.values())


def _chi2_uniform(values: np.ndarray, bits: int, bins: int = 256) -> float:
    top = (values.astype(np.uint64) >> np.uint64(bits - 8)).astype(np.int64)
    counts = np.bincount(top, minlength=bins)
    expected = values.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


# chi-square with 255 degrees of freedom: the 1 - 1e-7 quantile is 390.2 (scipy.stats.chi2.ppf).
# The masks are fresh random keys each run and the test makes 16 such checks, so at the 99.9%
# quantile (330.5) about one run in 60 failed by chance (seen: 340.1); structured bytes score in
# the thousands, far above either bound.
_CHI2_255_TAIL = 390.2


@pytest.mark.parametrize("bits", [16, 32])
def test_masked_vectors_are_indistinguishable_from_uniform(bits: int) -> None:
    n = 65_536
    cfg = CohortConfig("m", n, target_size=4, min_size=3, bits=bits, clip=1.0)
    # maximally structured inputs: all zero, or one spike
    deltas = {f"dev{i}": np.zeros(n, np.float32) for i in range(4)}
    deltas["dev1"][7] = 1.0
    seen: list[MaskedInput] = []

    def spy(device_id: str, msg: AnyUp) -> AnyUp:
        if isinstance(msg, MaskedInput):
            seen.append(msg)
        return msg

    run = run_cohort(cfg, deltas, tamper=spy)
    assert run.cohort.phase is CohortPhase.DONE and len(seen) == 4
    dtype = fixedpoint.uint_dtype(bits)
    for msg in seen:
        y = np.frombuffer(msg.data, dtype)
        assert _chi2_uniform(y, bits) < _CHI2_255_TAIL
        # the low byte too (fixed point puts all the structure there)
        low = (y & 0xFF).astype(np.int64)
        counts = np.bincount(low, minlength=256)
        assert float(((counts - n / 256) ** 2 / (n / 256)).sum()) < _CHI2_255_TAIL
    # the test can fail: the unmasked fixed-point vector is far from uniform
    z = fixedpoint.encode(deltas["dev1"], run.cohort.view.scale, bits, np.random.default_rng(0))  # type: ignore[union-attr]
    assert _chi2_uniform(z, bits) > 10 * _CHI2_255_TAIL


@pytest.mark.parametrize("phase", ["before_masked", "before_reveal", "mixed"])
def test_drop_out_of_a_third_after_sharing_is_recovered(phase: str) -> None:
    cfg = CohortConfig("m", N, target_size=9, min_size=3, clip=1.0)  # t = 6
    deltas = _deltas(9)
    ids = list(deltas)
    dropped = set(ids[6:]) if phase != "mixed" else {ids[0], ids[4]}
    kwargs = {
        "before_masked": {"drop_before_masked": dropped},
        "before_reveal": {"drop_before_reveal": dropped},
        "mixed": {
            "drop_before_masked": {ids[0]},
            "drop_before_reveal": {ids[4]},
            "drop_before_shares": {ids[8]},
        },
    }[phase]
    run = run_cohort(cfg, deltas, rngs=_rngs(ids), **kwargs)  # type: ignore[arg-type]
    result = run.cohort.result
    assert run.cohort.phase is CohortPhase.DONE and result is not None
    counted = [d for d in ids if d not in {ids[0], ids[8]}] if phase == "mixed" else ids
    if phase == "before_masked":
        counted = ids[:6]
    assert list(result.members) == counted  # a device that only missed the reveal still counts
    expected = sum(run.sent[d].astype(np.float64) for d in counted) / len(counted)
    np.testing.assert_allclose(result.mean, expected, atol=1e-6)


def test_drop_out_with_secagg_plus_neighbourhoods() -> None:
    cfg = CohortConfig("m", N, target_size=12, min_size=3, clip=1.0, degree=6)  # hood 7, t=5
    deltas = _deltas(12, seed=3)
    ids = list(deltas)
    # a neighbourhood of 7 with t = 5 survives any 2 drop-outs (SecAgg+ counts per neighbourhood)
    run = run_cohort(cfg, deltas, drop_before_masked={ids[2]}, drop_before_reveal={ids[9]})
    assert run.cohort.phase is CohortPhase.DONE and run.cohort.result is not None
    counted = [d for d in ids if d != ids[2]]
    expected = sum(run.sent[d].astype(np.float64) for d in counted) / len(counted)
    np.testing.assert_allclose(run.cohort.result.mean, expected, atol=1e-6)
    # each device dealt shares to its 6 neighbours and itself only
    assert all(len(v.neighbour_ids(ids[0])) == 7 for v in [run.cohort.view] if v is not None)


def test_below_threshold_fails_closed_before_any_unmask_request() -> None:
    cfg = CohortConfig("m", N, target_size=9, min_size=3, clip=1.0)  # t = 6
    deltas = _deltas(9)
    ids = list(deltas)
    revealed: list[UnmaskResponse] = []

    def spy(device_id: str, msg: AnyUp) -> AnyUp:
        if isinstance(msg, UnmaskResponse):
            revealed.append(msg)
        return msg

    run = run_cohort(cfg, deltas, drop_before_masked=set(ids[5:]), tamper=spy)  # 5 < 6 left
    assert run.cohort.phase is CohortPhase.ABANDONED
    assert "below_threshold" in run.cohort.abandon_reason
    assert run.cohort.result is None and run.unmask_requests == 0 and revealed == []
    live = [run.devices[d] for d in ids[:5]]
    assert all(s.phase is DevicePhase.DONE and s.applied is False for s in live)


def test_too_few_joiners_abandon_and_too_few_sharers_abandon() -> None:
    cfg = CohortConfig("m", N, target_size=9, min_size=4, clip=1.0)
    run = run_cohort(cfg, _deltas(3))  # closed with 3 < min 4
    assert run.cohort.phase is CohortPhase.ABANDONED and run.cohort.view is None
    run = run_cohort(cfg, _deltas(9), drop_before_shares={f"dev0{i}" for i in range(4)})
    assert run.cohort.phase is CohortPhase.ABANDONED and run.unmask_requests == 0


def _masked_sessions(k: int = 6) -> dict[str, DeviceSession]:
    """Devices that have masked and await the consistency check (driven by hand, no driver)."""
    cfg = CohortConfig("m", N, target_size=k, min_size=3, clip=1.0)
    cohort = ServerCohort(cfg, bytes(16), 0, bytes(32))
    deltas = _deltas(k)
    sessions = {d: DeviceSession(d, "m", ENROL.enrol(d)) for d in deltas}
    out = [o for s in sessions.values() for o in cohort.add_join(s.join())]
    out = [o for d, a in out for o in cohort.on_shares(sessions[d].on_announce(a))]  # type: ignore[arg-type]
    for d, bundle in out:
        sessions[d].on_bundle(bundle)  # type: ignore[arg-type]
        msg, _ = sessions[d].mask(deltas[d], 1)
        cohort.on_masked(msg)
    assert cohort.phase is CohortPhase.CHECKING
    return sessions


def _signed(survivors: list[str]) -> tuple[DeviceSession, bytes, dict[str, bytes]]:
    """dev00 after every device signed `survivors`; the cohort id and their signatures."""
    sessions = _masked_sessions()
    view = sessions["dev00"].view
    assert view is not None
    cid = view.announce.cohort_id
    check = ConsistencyRequest(cid, tuple(survivors))
    sigs = {d: sessions[d].on_check(check).signature for d in survivors}
    return sessions["dev00"], cid, sigs


def test_device_refuses_unsafe_unmask_requests() -> None:
    session = _masked_sessions()["dev00"]
    assert session.phase is DevicePhase.MASKED and session.view is not None
    cid = session.view.announce.cohort_id
    ids = [m.device_id for m in session.view.announce.members]
    t = session.view.announce.threshold  # 4 of 6
    with pytest.raises(SecAggError) as err:  # fewer than t survivors: nothing signed
        session.on_check(ConsistencyRequest(cid, tuple(ids[: t - 1])))
    assert err.value.reason is SecAggReason.BELOW_THRESHOLD
    assert session.finished  # failed: it answers nothing more in this cohort

    session, cid, sigs = _signed(ids)
    with pytest.raises(SecAggError) as err:  # the same member both survived and dropped
        session.on_unmask(UnmaskRequest(cid, tuple(ids), (ids[1],), sigs))
    assert err.value.reason is SecAggReason.UNSAFE_REQUEST

    session, cid, sigs = _signed(ids[:5])
    first = session.on_unmask(UnmaskRequest(cid, tuple(ids[:5]), (ids[5],), sigs))
    assert set(first.b_shares) == set(ids[:5]) and set(first.sk_shares) == {ids[5]}
    with pytest.raises(SecAggError) as err:  # a second request (other partition) is refused
        session.on_unmask(UnmaskRequest(cid, tuple(ids), (), sigs))
    assert err.value.reason is SecAggReason.WRONG_PHASE


def test_responder_revealing_inconsistent_shares_is_excluded() -> None:
    cfg = CohortConfig("m", N, target_size=9, min_size=3, clip=1.0)  # t = 6
    deltas = _deltas(9)
    ids = list(deltas)

    def liar(device_id: str, msg: AnyUp) -> AnyUp:
        if device_id == ids[3] and isinstance(msg, UnmaskResponse):
            flipped = {d: bytes([v[0] ^ 1]) + v[1:] for d, v in msg.b_shares.items()}
            return dataclasses.replace(msg, b_shares=flipped)
        return msg

    run = run_cohort(cfg, deltas, tamper=liar, drop_before_masked={ids[8]})
    result = run.cohort.result
    assert run.cohort.phase is CohortPhase.DONE and result is not None
    assert result.excluded == (ids[3],)
    counted = ids[:8]  # the liar's own input still counts: its seed came from honest shares
    expected = sum(run.sent[d].astype(np.float64) for d in counted) / 8
    np.testing.assert_allclose(result.mean, expected, atol=1e-6)


def test_dealer_sending_a_bad_share_is_excluded_without_breaking_the_cohort() -> None:
    cfg = CohortConfig("m", N, target_size=9, min_size=3, clip=1.0)
    deltas = _deltas(9)
    ids = list(deltas)

    def bad_dealer(device_id: str, msg: AnyUp) -> AnyUp:
        if device_id == ids[2] and isinstance(msg, SharesMessage):
            shares = list(msg.shares)
            victim = next(i for i, s in enumerate(shares) if s.peer == ids[5])
            shares[victim] = dataclasses.replace(shares[victim], b_hash=bytes(32))
            return dataclasses.replace(msg, shares=tuple(shares))
        return msg

    run = run_cohort(cfg, deltas, tamper=bad_dealer)
    result = run.cohort.result
    assert run.cohort.phase is CohortPhase.DONE and result is not None
    assert ids[2] in result.excluded and ids[2] not in result.members
    counted = [d for d in ids if d != ids[2]]
    expected = sum(run.sent[d].astype(np.float64) for d in counted) / 8
    np.testing.assert_allclose(result.mean, expected, atol=1e-6)


def test_device_refuses_an_announcement_that_is_not_for_it() -> None:
    cfg = CohortConfig("m", N, target_size=3, min_size=3, clip=1.0)
    run = run_cohort(cfg, _deltas(3))
    view = run.cohort.view
    assert view is not None
    stranger = DeviceSession("dev00", "m", ENROL.enrol("dev00"))  # same id, other keys
    with pytest.raises(SecAggError) as err:
        stranger.on_announce(view.announce)
    assert err.value.reason is SecAggReason.BAD_KEY
    weak = dataclasses.replace(view.announce, threshold=1)
    fresh = DeviceSession("devXX", "m", ENROL.enrol("devXX"))
    with pytest.raises(SecAggError) as err:
        fresh.on_announce(weak)
    assert err.value.reason is SecAggReason.BAD_PARAMS


def test_server_refuses_out_of_phase_and_foreign_messages() -> None:
    cfg = CohortConfig("m", N, target_size=3, min_size=3, clip=1.0)
    run = run_cohort(cfg, _deltas(3))
    with pytest.raises(SecAggError) as err:
        run.cohort.on_masked(MaskedInput("dev00", bytes(16), 1, b"", ()))
    assert err.value.reason is SecAggReason.WRONG_PHASE
    assert SHARE_BYTES == 66


@pytest.mark.parametrize("bits", [16, 32])
def test_distributed_skellam_noise_sums_to_the_announced_std(bits: int) -> None:
    n, k, sigma = 20_000, 5, 0.02
    cfg = CohortConfig("m", n, target_size=k, min_size=3, bits=bits, clip=1.0, noise_std=sigma)
    rng = np.random.default_rng(7)
    signal = (rng.normal(size=n) * 0.01).astype(np.float32)
    deltas = {f"dev{i}": signal for i in range(k)}  # every member sends the same vector
    run = run_cohort(cfg, deltas, rngs=_rngs(list(deltas)))
    result = run.cohort.result
    assert result is not None
    noise_on_sum = (result.mean.astype(np.float64) - sum(run.sent.values()) / k) * k
    assert abs(noise_on_sum.mean()) < 4 * sigma / np.sqrt(n)  # unbiased
    assert noise_on_sum.std() == pytest.approx(sigma, rel=0.05)  # sum of 5 shares: sigma
    # and no single member's noise share is enough on its own: each is sigma / sqrt(k)
    view = run.cohort.view
    assert view is not None and view.announce.noise_std == sigma


def test_noise_share_is_added_before_masking_not_by_the_server() -> None:
    cfg = CohortConfig("m", 1000, target_size=3, min_size=3, clip=1.0, noise_std=0.05)
    deltas = {f"dev{i}": np.zeros(1000, np.float32) for i in range(3)}
    run = run_cohort(cfg, deltas)
    assert run.cohort.result is not None
    # all inputs were zero: whatever the unmasked sum holds is the members' noise
    assert 0.03 < float(np.std(run.cohort.result.mean * 3)) < 0.07
