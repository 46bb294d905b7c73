"""The accountant reproduces published vectors (dp-accounting does the maths; we check we call
it right), calibration inverts it, and adaptive clipping's noise split is Andrew et al.'s."""

from __future__ import annotations

import itertools
import math

import pytest

from server.privacy.accountant import (
    Method,
    calibrate_noise_multiplier,
    epsilon,
    sum_noise_multiplier,
)


def test_opacus_vector_rdp() -> None:
    # Opacus's own RDP test: sigma 1.5, q 0.04, 2,250 steps, delta 1e-5 -> 7.32911
    eps = epsilon(1.5, 2250, 1e-5, 0.04, Method.RDP)
    assert eps == pytest.approx(7.3293, abs=5e-4)
    assert eps == pytest.approx(7.32911, abs=1e-3)


def test_opacus_vector_pld_is_tighter() -> None:
    eps = epsilon(1.5, 2250, 1e-5, 0.04, Method.PLD)
    assert eps == pytest.approx(6.77, abs=0.01)
    assert eps < epsilon(1.5, 2250, 1e-5, 0.04, Method.RDP)


def test_one_gaussian_release_at_sigma_4_53_is_epsilon_1() -> None:
    # sigma 4.530877117, q = 1, one step, delta 1e-6 -> epsilon 1.0 (RDP, the vector)
    assert epsilon(4.530877117, 1, 1e-6, 1.0, Method.RDP) == pytest.approx(1.0, abs=1e-5)
    # PLD is tighter for the same mechanism (measured 0.927)
    assert epsilon(4.530877117, 1, 1e-6, 1.0, Method.PLD) == pytest.approx(0.927, abs=2e-3)


def test_second_published_vector() -> None:
    assert epsilon(1.0, 1000, 1e-5, 0.01, Method.RDP) == pytest.approx(2.1014, abs=5e-4)


def test_epsilon_grows_with_flushes_and_is_zero_before_any() -> None:
    values = [epsilon(2.0, n, 1e-5) for n in range(6)]
    assert values[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("method", [Method.RDP, Method.PLD])
def test_calibration_spends_the_budget_in_the_planned_flushes(method: Method) -> None:
    sigma = calibrate_noise_multiplier(4.0, 1e-4, 50, method)
    assert epsilon(sigma, 50, 1e-4, 1.0, method) <= 4.0 + 1e-9
    assert epsilon(sigma * 0.99, 50, 1e-4, 1.0, method) > 4.0  # and not much more noise


def test_sum_noise_multiplier_pairs_with_the_count_noise_into_sigma() -> None:
    sigma, count_std = 1.2, 5.0
    s_sum = sum_noise_multiplier(sigma, count_std)
    # two Gaussian queries (sensitivity 1 and 1/2) compose into one of multiplier sigma
    assert s_sum**-2 + (2 * count_std) ** -2 == pytest.approx(sigma**-2)
    assert s_sum > sigma


def test_count_noise_too_small_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="too small"):
        sum_noise_multiplier(2.0, 0.5)  # K = 10 -> std 0.5: 2 * 0.5 < sigma


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        epsilon(1.0, 3, 0.0)
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(math.inf, 1e-5, 3)
