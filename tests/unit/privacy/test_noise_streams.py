"""Every DP release draws from its own stream: no two (domain, version) pairs share keystream,
and their Gaussian noise is uncorrelated at every relative shift, not only at zero.

The attack these tests play: if release v+1's noise were release v's shifted by a few values,
an observer subtracting the shifted previous model change from the next one would cancel the
noise and read the un-noised sum.
"""

from __future__ import annotations

import itertools

import numpy as np

from server.privacy import DpMechanism, PrivacyConfig
from server.privacy.noise import KEY_BYTES, NoiseDomain, gaussian, stream_words

KEY = bytes(range(KEY_BYTES))
N = 4096


def _max_abs_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """max over every circular shift k of |corr(a, roll(b, k))|, by FFT."""
    a = (a - a.mean()) / (a.std() * np.sqrt(a.size))
    b = (b - b.mean()) / (b.std() * np.sqrt(b.size))
    xcorr = np.fft.irfft(np.fft.rfft(a) * np.conj(np.fft.rfft(b)), n=a.size)
    return float(np.abs(xcorr).max())


# independent streams: each shift's correlation ~ N(0, 1/N), the max over N shifts ~ 0.065; an
# overlap of even a quarter of the stream gives >= 0.25
_BOUND = 0.15

_PAIRS = [
    ((NoiseDomain.SUM, 7), (NoiseDomain.SUM, 8)),
    ((NoiseDomain.SUM, 7), (NoiseDomain.SUM, 9)),
    ((NoiseDomain.SUM, 0), (NoiseDomain.SUM, 1 << 32)),
    ((NoiseDomain.SUM, 7), (NoiseDomain.CLIP_COUNT, 7)),
    ((NoiseDomain.CLIP_COUNT, 7), (NoiseDomain.SUM, 8)),
]


def test_no_two_releases_share_a_keystream_word() -> None:
    releases = [(d, v) for d in NoiseDomain for v in (0, 1, 2, 3, 1000, 1 << 40)]
    words = {r: set(stream_words(KEY, r[0], r[1], 2 * N).tolist()) for r in releases}
    for a, b in itertools.combinations(releases, 2):
        assert not words[a] & words[b], f"releases {a} and {b} share keystream"


def test_noise_of_different_releases_is_uncorrelated_at_every_shift() -> None:
    for (d1, v1), (d2, v2) in _PAIRS:
        a = gaussian(KEY, d1, v1, N, 1.0)
        b = gaussian(KEY, d2, v2, N, 1.0)
        assert _max_abs_cross_correlation(a, b) < _BOUND, ((d1, v1), (d2, v2))


def test_the_correlation_check_detects_a_shifted_copy() -> None:
    a = gaussian(KEY, NoiseDomain.SUM, 7, N, 1.0)
    assert _max_abs_cross_correlation(a, np.roll(a, 2)) > 0.99
    half = np.concatenate([a[2 : N // 2], gaussian(KEY, NoiseDomain.SUM, 99, N // 2 + 2, 1.0)])
    assert _max_abs_cross_correlation(a, half) > 0.3


def test_consecutive_released_models_do_not_cancel_each_others_noise() -> None:
    """Two consecutive flushes of a zero sum: no shift of one release's noise removes the
    other's (the difference keeps the variance of two independent draws)."""
    config = PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0)
    mechanism = DpMechanism(config, expected_per_flush=10)
    first = mechanism.release(np.zeros(N, np.float32), version=3, unclipped=0, clipped=0)
    second = mechanism.release(np.zeros(N, np.float32), version=4, unclipped=0, clipped=0)
    assert first is not None and second is not None
    residual = min(float(np.var(second - np.roll(first, k))) for k in range(-8, 9))
    assert residual > 1.5  # independent: var 2 * (sigma C)^2 = 2; a shifted copy leaves ~0
