"""The auditor's statistics against hand-checked numbers: Clopper-Pearson bounds and the epsilon of
a pair of Gaussians (equal variances: dp-accounting's Gaussian mechanism)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent
from dp_accounting.pld import PLDAccountant

from fleet.audit.attacks import residuals
from fleet.audit.bounds import (
    clopper_pearson_epsilon,
    gaussian_fit_epsilon,
    gaussian_pair_epsilon,
    held_out_epsilon,
    pooled_gaussian_epsilon,
)


def test_equal_variance_pair_is_the_gaussian_mechanism() -> None:
    accountant = PLDAccountant()
    accountant.compose(GaussianDpEvent(2.5))  # sensitivity 1, sigma 2.5: mu = 0.4
    expected = accountant.get_epsilon(1e-5)
    assert gaussian_pair_epsilon(0.0, 1.0, 0.4, 1.0, 1e-5) == pytest.approx(expected, rel=1e-3)
    assert gaussian_pair_epsilon(3.0, 2.0, 3.8, 2.0, 1e-5) == pytest.approx(expected, rel=1e-3)
    assert gaussian_pair_epsilon(0.0, 1.0, 0.0, 1.0, 1e-5) == 0.0
    # unequal variances: the privacy loss is unbounded, so epsilon exceeds the equal case
    assert gaussian_pair_epsilon(0.0, 1.0, 0.4, 1.2, 1e-5) > expected + 1.0


def test_perfect_separation_gives_the_clopper_pearson_ceiling() -> None:
    # 0 of 500 false positives: FPR <= 1 - 0.025^(1/500) = 0.007351 (two-sided 95%), FNR the same
    fpr_hi = 1 - 0.025 ** (1 / 500)
    ceiling = math.log((1 - 1e-5 - fpr_hi) / fpr_hi)
    absent, present = np.arange(500.0), np.arange(500.0) + 1000
    assert clopper_pearson_epsilon(absent, present, 1e-5) == pytest.approx(ceiling, rel=1e-6)
    assert ceiling == pytest.approx(4.9056, abs=1e-3)
    # held out: statistic and threshold from half the scores, one test on the other 250
    half = math.log((1 - 1e-5 - (1 - 0.025 ** (1 / 250))) / (1 - 0.025 ** (1 / 250)))
    worse = {"noise": np.zeros(500) + np.arange(500) % 2}
    assert held_out_epsilon({"s": absent, **worse}, {"s": present, **worse}, 1e-5) == (
        pytest.approx(half, rel=1e-6),
        "s",
    )
    # either direction: the present world scoring low proves as much
    assert clopper_pearson_epsilon(absent, -present, 1e-5) == pytest.approx(ceiling, rel=1e-6)


def test_indistinguishable_scores_prove_nothing() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(400), rng.standard_normal(400)
    # the maximum over 800 thresholds finds a little by chance; the held-out test does not
    assert clopper_pearson_epsilon(a, b, 1e-5) < 0.3
    assert held_out_epsilon({"s": a}, {"s": b}, 1e-5)[0] == 0.0
    assert pooled_gaussian_epsilon(a, b, 1e-5) < 0.5
    assert gaussian_fit_epsilon(a, a + 0.0, 1e-5) == 0.0


def test_residuals_cancel_a_noise_that_repeats_shifted() -> None:
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(512) * 100
    signal = rng.standard_normal((3, 512))
    changes = np.stack([signal[0] + noise, signal[1] + np.roll(noise, -2), signal[2] + noise])
    r = residuals(changes)
    assert np.linalg.norm(r[0]) > 1000  # nothing before it to explain its noise
    for v in (1, 2):  # the noise is gone; what is left is of the contributions' size
        assert np.linalg.norm(r[v]) < 3 * np.linalg.norm(signal[v]) + 1
