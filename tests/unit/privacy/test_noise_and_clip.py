"""Clipping bounds every contribution (device and server side, after dequantisation); the noise
has the configured standard deviation and is a pure function of (key, version)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from protocol.clipping import clip_l2, l2_norm
from protocol.codecs import decode
from protocol.error_feedback import compress_with_feedback
from server.privacy import DpMechanism, PrivacyConfig
from server.privacy.noise import NoiseDomain, derive_key, gaussian

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=finite), st.floats(1e-3, 1e3))
def test_clip_never_exceeds_the_bound_and_keeps_small_vectors(v: np.ndarray, bound: float) -> None:
    clipped, was = clip_l2(v, bound)
    assert l2_norm(clipped) <= bound
    assert clipped.dtype == np.float32
    if l2_norm(v) <= bound:
        assert not was and clipped is v
    else:
        assert was
        # same direction: a positive multiple
        cos = float(np.dot(clipped.astype(np.float64), v)) / (l2_norm(clipped) * l2_norm(v))
        assert cos == pytest.approx(1.0, abs=1e-5)


CODECS = [
    {"name": "int8"},
    {"name": "int4"},
    {"name": "float16"},
    {"name": "topk", "fraction": 0.1, "values": {"name": "int8"}},
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: str(c["name"]))
def test_device_messages_stay_within_clip_after_dequantisation_over_many_rounds(
    codec: dict[str, object],
) -> None:
    rng = np.random.default_rng(0)
    bound = 0.5
    residual: np.ndarray | None = None
    for _ in range(40):
        delta = (rng.standard_normal(500) * rng.uniform(0.001, 0.2)).astype(np.float32)
        payload, residual = compress_with_feedback(delta, residual, codec, max_norm=bound)
        sent = decode(payload, codec, 500)
        assert l2_norm(sent) <= bound  # what the server decodes never exceeds C
        # the residual is only the quantisation error of a vector of norm <= C: it stays bounded
        assert l2_norm(residual) <= bound


def _mechanism(sigma: float, clip: float, seed: int = 3, adaptive: bool = False) -> DpMechanism:
    config = PrivacyConfig(
        epsilon=1e9,
        delta=1e-5,
        noise_multiplier=sigma,
        clip_norm=clip,
        adaptive_clip=adaptive,
        seed=seed,
    )
    return DpMechanism(config, expected_per_flush=100)


def test_noise_has_the_configured_standard_deviation() -> None:
    m = _mechanism(sigma=1.3, clip=0.7)
    noised = m.release(np.zeros(200_000, np.float32), version=5, unclipped=0, clipped=0)
    assert noised is not None
    x = noised.astype(np.float64)
    std = 1.3 * 0.7
    # 200k samples: the sample std's relative standard error is ~0.16%; 1% is > 6 s.e.
    assert x.std() == pytest.approx(std, rel=0.01)
    assert abs(x.mean()) < 5 * std / np.sqrt(x.size)
    assert stats.kstest(x / std, "norm").pvalue > 1e-3


def test_noise_is_a_pure_function_of_key_and_version() -> None:
    key = derive_key(1)
    a = gaussian(key, NoiseDomain.SUM, 7, 1000, 1.0)
    np.testing.assert_array_equal(a, gaussian(key, NoiseDomain.SUM, 7, 1000, 1.0))
    assert not np.array_equal(a, gaussian(key, NoiseDomain.SUM, 8, 1000, 1.0))
    assert not np.array_equal(a, gaussian(derive_key(2), NoiseDomain.SUM, 7, 1000, 1.0))
    assert not np.array_equal(a[:1], gaussian(key, NoiseDomain.CLIP_COUNT, 7, 1, 1.0))


def test_random_keys_differ_between_servers() -> None:
    config = PrivacyConfig(epsilon=8, delta=1e-5, noise_multiplier=1.0)
    a, b = DpMechanism(config, 10), DpMechanism(config, 10)
    assert a.state_dict()["dp_key"] != b.state_dict()["dp_key"]


def test_adaptive_clip_moves_towards_the_target_quantile() -> None:
    m = _mechanism(sigma=1.0, clip=1.0, adaptive=True)
    rng = np.random.default_rng(1)
    for version in range(60):
        total, unclipped = np.zeros(10, np.float32), 0
        for _ in range(100):  # norms ~ 0.1 * chi(10): median about 0.31
            clipped, within = m.clip((rng.standard_normal(10) * 0.1).astype(np.float32))
            total += clipped
            unclipped += within
        assert m.release(total, version, unclipped=unclipped, clipped=100) is not None
    clip = m.status().clip_norm
    assert 0.25 < clip < 0.4  # Andrew et al.: C tracks the median norm


def test_adaptive_clip_corrects_the_sum_noise_multiplier() -> None:
    m = _mechanism(sigma=1.0, clip=1.0, adaptive=True)
    assert m.count_std == 5.0  # 100 expected updates per flush / 20
    assert m.sum_sigma == pytest.approx((1.0 - 0.1**2) ** -0.5)
