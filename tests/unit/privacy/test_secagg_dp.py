"""Secure aggregation with DP: every cohort member is a device of the DP accounting.

The attack (two worlds, same noise key): one member of a 3-member cohort sends its largest
allowed update (at the clip the cohort announces) or nothing (zeroed out). The released model
change may move by at most C / W where the noise on it has std sigma C / W: the ratio of the
shift to the noise std is at most 1 / sigma. Before, members clipped to `secure_aggregation.clip`
(10, unrelated to C), the cohort's mean was clipped to C as if one device had sent it, and one
member flipped the release from -C to +C: twice the accounted sensitivity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol.errors import ConfigError
from server.privacy import PrivacyConfig
from server.secagg_apply import apply_cohort, cohort_record
from server.secagg_privacy import dp_member_clip
from server.strategies import make_strategy
from tests.unit.server.factory import make_manifest
from tests.unit.server.test_app import _config

N = 4096
MANIFEST = make_manifest(N)
SIGMA, C = 1.0, 1.0
DP_TABLE = {"epsilon": 50.0, "delta": 1e-5, "noise_multiplier": SIGMA, "clip_norm": C}
SECURE = {"enabled": True, "cohort_size": 3, "min_size": 3}


def _release(member_clip: float, target_sends: bool) -> np.ndarray:
    privacy = PrivacyConfig(epsilon=50.0, delta=1e-5, noise_multiplier=SIGMA, clip_norm=C, seed=4)
    strategy = make_strategy("fedbuff", {"buffer_size": 3}, None, {}, privacy=privacy)
    u = np.zeros(N, np.float32)
    u[0] = 1.0
    members = [-0.25 * member_clip * u, -0.25 * member_clip * u]  # honest, within the clip
    members.append(member_clip * u if target_sends else 0.0 * u)
    mean = np.sum(members, axis=0) / 3
    record = cohort_record(b"cohort-0", 0, mean.astype(np.float32), 30, 3)
    model = np.zeros(N, np.float32)
    result = apply_cohort(strategy, model, 0, record, MANIFEST)
    assert result.stepped
    return result.model - model


def test_one_member_moves_the_release_by_at_most_its_accounted_sensitivity(
    tmp_path: Path,
) -> None:
    config = _config(
        tmp_path, strategy={"name": "fedbuff", "buffer_size": 3}, privacy=DP_TABLE,
        secure_aggregation=SECURE,
    )  # fmt: skip
    member_clip = config.secure_aggregation.clip
    with_target, without = _release(member_clip, True), _release(member_clip, False)
    noise_std = float(np.std(without[1:]))  # the coordinates nobody's data touches
    shift = float(np.linalg.norm(with_target - without))
    assert shift / noise_std <= 1.05 / SIGMA


def test_members_clip_to_the_dp_clip_less_the_fixed_point_rounding(tmp_path: Path) -> None:
    config = _config(
        tmp_path, strategy={"name": "fedbuff", "buffer_size": 3}, privacy=DP_TABLE,
        secure_aggregation={**SECURE, "bits": 16},
    )  # fmt: skip
    settings = config.secure_aggregation
    assert settings.clip <= C
    member = dp_member_clip(settings, MANIFEST, C)
    # each member's rounded contribution: clip + sqrt(n) / scale at most, which must fit in C
    from protocol.secagg.fixedpoint import scale_for

    scale = scale_for(settings.bits, member, settings.cohort_size, settings.noise_std)
    assert member + np.sqrt(N) / scale <= C
    assert member > 0.5 * C  # 16 bits and 4,096 parameters leave most of C


@pytest.mark.parametrize(
    ("privacy", "secure", "match"),
    [
        ({}, {"clip": 10.0}, r"secure_aggregation\.clip"),
        ({"adaptive_clip": True, "clipped_count_std": 5.0}, {}, "adaptive_clip"),
    ],
)
def test_combinations_that_break_the_dp_bound_are_refused(
    tmp_path: Path, privacy: dict[str, object], secure: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(
            tmp_path, strategy={"name": "fedbuff", "buffer_size": 3},
            privacy={**DP_TABLE, **privacy}, secure_aggregation={**SECURE, **secure},
        )  # fmt: skip
