"""Adaptive clipping's released count has the sensitivity the accountant assumes (1/2).

The next flush's C is published (in the offer), and C' = C exp(-eta (f - gamma)) gives the noisy
statistic f back exactly. The attack: two worlds that differ in one device, same noise key;
whatever that device sends, the statistics m * f the two worlds release differ by at most 1/2
(Andrew et al. 2021 centre each device's bit at -1/2 / +1/2 so that zeroing a device moves the
count by 1/2; an uncentred count moves by 1 and doubles the count's privacy loss).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.privacy import DpMechanism, PrivacyConfig

M = 20  # expected updates per flush
GAMMA, ETA = 0.5, 0.2


def _released_statistic(present: bool, target_norm: float, version: int) -> float:
    config = PrivacyConfig(
        epsilon=1e6,
        delta=1e-5,
        noise_multiplier=1.0,
        clip_norm=1.0,
        adaptive_clip=True,
        target_quantile=GAMMA,
        clip_learning_rate=ETA,
        seed=11,
    )
    mechanism = DpMechanism(config, expected_per_flush=M)
    rng = np.random.default_rng(version)
    others = [
        (rng.standard_normal(8) * rng.uniform(0.1, 0.6)).astype(np.float32) for _ in range(M - 1)
    ]
    deltas = [*others, np.full(8, target_norm / math.sqrt(8), np.float32)] if present else others
    within = [mechanism.clip(delta)[1] for delta in deltas]  # the buffer keeps these counts
    mechanism.release(np.zeros(8, np.float32), version, unclipped=sum(within), clipped=len(within))
    clip_after = mechanism.status().clip_norm
    fraction = GAMMA - math.log(clip_after / 1.0) / ETA  # inverts C' = C exp(-eta (f - gamma))
    return fraction * M


@pytest.mark.parametrize("target_norm", [0.0, 0.05, 5.0, 1e4])
@pytest.mark.parametrize("version", [0, 1, 7])
def test_one_device_moves_the_released_count_by_at_most_one_half(
    target_norm: float, version: int
) -> None:
    with_target = _released_statistic(True, target_norm, version)
    without = _released_statistic(False, target_norm, version)
    assert abs(with_target - without) <= 0.5 + 1e-6
