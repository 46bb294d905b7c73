"""Under DP, a release depends on nothing data-dependent but its own buffer (and private
quantities): no non-private statistic of earlier devices' updates may rescale a later one.

The attack: two worlds that differ only in what the devices of the *first* flush sent; the
second flush has the same devices, the same updates and the same noise key. A release that
changes between the worlds leaks the first flush's devices through a release they were not in
(the default defence's adaptive norm bound, 3x the running median of raw norms, did this).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.admission import AdmissionLimits
from server.core import ServerCore
from server.privacy import PrivacyConfig
from server.strategies import make_strategy
from tests.unit.server.factory import make_manifest, update_bytes

N = 32
K = 4
MANIFEST = make_manifest(N)


def _second_release(state: Path, first_flush_norm: float, robust: dict[str, object]) -> np.ndarray:
    privacy = PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0, clip_norm=1.0, seed=9)
    strategy = make_strategy("fedbuff", {"buffer_size": K}, None, robust, privacy=privacy)
    core = ServerCore(
        MANIFEST, np.zeros(N, np.float32), strategy, state, AdmissionLimits(max_staleness=None)
    )
    core.recover()
    rng = np.random.default_rng(0)
    seq = 1
    for flush in range(4):  # three flushes of "earlier" devices fill the norm window
        for i in range(K):
            direction = rng.standard_normal(N)
            delta = first_flush_norm * direction / np.linalg.norm(direction)
            core.submit(
                f"early-{flush}-{i}",
                update_bytes(
                    MANIFEST, delta, device=f"early-{flush}-{i}", seq=seq, base=core.version
                ),
            )
            seq += 1
    before = core.model.copy()
    later = np.random.default_rng(1)
    for i in range(K):  # the release under test: identical in both worlds
        direction = later.standard_normal(N)
        delta = 0.9 * direction / np.linalg.norm(direction)
        core.submit(
            f"late-{i}", update_bytes(MANIFEST, delta, device=f"late-{i}", base=core.version)
        )
    core.commit()
    return core.model - before


@pytest.mark.parametrize("robust", [{}, {"aggregator": "mean"}])
def test_a_release_does_not_depend_on_earlier_devices_norms(
    tmp_path: Path, robust: dict[str, object]
) -> None:
    tiny = _second_release(tmp_path / "a", 0.01, robust)
    large = _second_release(tmp_path / "b", 1.0, robust)
    # equal up to float32 rounding of (model after - model before) at different bases
    np.testing.assert_allclose(tiny, large, atol=1e-6)
