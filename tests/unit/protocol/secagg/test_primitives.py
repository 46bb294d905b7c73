"""Fixed point, Shamir, PRG, random-k and neighbourhoods: hand-computed values and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.secagg import fixedpoint, randomk, shamir
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.graph import neighbourhoods
from protocol.secagg.prg import agree, expand, new_keypair


def test_scale_leaves_a_headroom_bit() -> None:
    # b=16, K=10, C=1: honest sums stay below 2^14: (16383 - 10) / 10 = 1637.3;
    # with sigma 0.5: 16373 / (10 + 4) = 1169.5
    assert fixedpoint.HEADROOM_BITS == 1
    assert fixedpoint.scale_for(16, 1.0, 10) == pytest.approx(1637.3)
    assert fixedpoint.scale_for(16, 1.0, 10, noise_std=0.5) == pytest.approx(1169.5)
    with pytest.raises(SecAggError) as err:
        fixedpoint.scale_for(16, 1.0, 40000)
    assert err.value.reason is SecAggReason.BAD_PARAMS


@pytest.mark.parametrize("bits", [16, 32])
def test_k_updates_at_the_clip_do_not_wrap(bits: int) -> None:
    k, clip = 50, 2.0
    scale = fixedpoint.scale_for(bits, clip, k)
    rng = np.random.default_rng(1)
    for sign in (1.0, -1.0):
        x = np.full(3, sign * clip, np.float32)  # every coordinate at the bound
        total = np.zeros(3, fixedpoint.uint_dtype(bits))
        for _ in range(k):
            total += fixedpoint.encode(x, scale, bits, rng)
        np.testing.assert_allclose(
            fixedpoint.decode_sum(total, scale, bits), sign * clip * k, rtol=1e-3
        )


def test_stochastic_rounding_is_unbiased() -> None:
    scale, rng = 1.0, np.random.default_rng(2)
    x = np.full(200_000, 0.25, np.float32)  # floor 0, rounds up with probability 1/4
    z = fixedpoint.encode(x, scale, 32, rng)
    assert set(np.unique(z)) == {0, 1}
    assert z.mean() == pytest.approx(0.25, abs=0.005)


def test_negative_values_wrap_to_twos_complement() -> None:
    z = fixedpoint.encode(np.array([-3.0], np.float32), 1.0, 16, np.random.default_rng(0))
    assert z.dtype == np.uint16 and int(z[0]) == 65536 - 3
    assert fixedpoint.decode_sum(z, 1.0, 16)[0] == -3.0


def test_clip_scales_to_the_l2_bound() -> None:
    x = np.array([3.0, 4.0], np.float32)
    np.testing.assert_allclose(fixedpoint.clip_l2(x, 1.0), [0.6, 0.8], rtol=1e-6)
    assert fixedpoint.clip_l2(x, 10.0) is x


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=40),
    st.floats(1e-3, 1e3),
)
def test_clipped_norm_never_exceeds_the_clip(values: list[float], clip: float) -> None:
    x = np.array(values, np.float32)
    y = fixedpoint.clip_l2(x, clip)
    assert y.dtype == np.float32
    assert float(np.linalg.norm(y.astype(np.float64))) <= clip


def test_float32_clip_of_17_04_is_not_above_10() -> None:
    y = fixedpoint.clip_l2(np.array([17.04, 0.0], np.float32), 10.0)
    assert float(y[0]) <= 10.0  # float32 scaling gave 10.000000954


def test_nan_refused() -> None:
    with pytest.raises(SecAggError) as err:
        fixedpoint.encode(np.array([np.nan], np.float32), 1.0, 32, np.random.default_rng(0))
    assert err.value.reason is SecAggReason.BAD_VECTOR


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(2, 8), st.integers(0, 5))
def test_shamir_any_t_shares_rebuild(secret: bytes, t: int, extra: int) -> None:
    n = t + extra
    shares = shamir.split(secret, list(range(1, n + 1)), t)
    picked = dict(list(shares.items())[extra:])  # any t or more
    assert shamir.reconstruct(picked, t) == secret


def test_shamir_below_threshold_refused_and_off_polynomial_detected() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 4, 5], 3)
    with pytest.raises(SecAggError) as err:
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3)
    assert err.value.reason is SecAggReason.BELOW_THRESHOLD
    bad = dict(shares)
    bad[5] = (bad[5] + 1) % shamir.PRIME
    with pytest.raises(SecAggError) as err:
        shamir.reconstruct(bad, 3)
    assert err.value.reason is SecAggReason.RECONSTRUCTION


def test_shamir_t_minus_one_shares_are_consistent_with_any_secret() -> None:
    # 2-of-n: one share y1 = s + a*1; for any other secret s' there is a' = y1 - s' that fits
    shares = shamir.split(bytes(32), [1, 2], 2)
    other = int.from_bytes(b"\xff" * 32, "big")
    a2 = (shares[1] - other) % shamir.PRIME
    assert (other + a2 * 1) % shamir.PRIME == shares[1]


def test_share_bytes_checked() -> None:
    with pytest.raises(SecAggError):
        shamir.share_from_bytes(b"\x00" * 10)
    with pytest.raises(SecAggError):
        shamir.share_from_bytes(b"\xff" * shamir.SHARE_BYTES)  # >= p


def test_agreement_is_symmetric_and_masks_deterministic() -> None:
    a, b = new_keypair(), new_keypair()
    assert agree(a.private, b.public) == agree(b.private, a.public)
    m1, m2 = expand(b"k" * 32, 1000, 16), expand(b"k" * 32, 1000, 16)
    assert m1.dtype == np.uint16 and np.array_equal(m1, m2)
    assert not np.array_equal(m1, expand(b"j" * 32, 1000, 16))
    with pytest.raises(SecAggError) as err:
        agree(a.private, bytes(32))  # low-order point
    assert err.value.reason is SecAggReason.BAD_KEY


def test_random_k_is_a_shared_exact_support() -> None:
    s1 = randomk.select(b"s" * 32, 10_000, 100)
    assert np.array_equal(s1, randomk.select(b"s" * 32, 10_000, 100))
    assert s1.size == 100 and np.all(np.diff(s1) > 0) and s1[-1] < 10_000
    assert not np.array_equal(s1, randomk.select(b"t" * 32, 10_000, 100))
    assert np.array_equal(randomk.select(b"s" * 32, 7, 7), np.arange(7))


def test_random_k_covers_coordinates_uniformly() -> None:
    counts = np.zeros(100)
    for i in range(400):
        counts[randomk.select(i.to_bytes(32, "big"), 100, 10)] += 1
    assert counts.min() > 15 and counts.max() < 70  # expected 40 each


def test_neighbourhoods_complete_and_ring() -> None:
    full = neighbourhoods(5, 0, bytes(32))
    assert all(h == frozenset(range(5)) for h in full)
    ring = neighbourhoods(12, 4, bytes(32))
    assert all(len(h) == 5 and i in h for i, h in enumerate(ring))
    assert all(i in ring[j] for i in range(12) for j in ring[i])  # symmetric
    with pytest.raises(SecAggError):
        neighbourhoods(12, 3, bytes(32))
