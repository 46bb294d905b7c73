"""The simulator's server and the production server run one pipeline: the same update bytes fed to
`SimServer` (no log, virtual clock) and to `ServerCore` (durable log) give the same acks and the
same model bits, on the fused path (codec-form deltas, compiled kernels, one-pass flush)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleet.sim.server_side import SimServer
from protocol.errors import Reason
from server.admission import Admission, AdmissionLimits
from server.admitted import Contribution, FusedUpdate
from server.core import ServerCore
from server.kernels import fused
from server.privacy import PrivacyConfig
from server.serving import ServingAverage
from server.strategies import StepResult, Strategy, make_strategy
from tests.unit.server.factory import make_manifest, update_bytes

N = fused.KERNEL_MIN_VALUES + 100  # large enough for the compiled kernels and one-pass step
MANIFEST = make_manifest(N)
LIMITS = AdmissionLimits(max_staleness=None, max_norm=20.0, rate_per_minute=6.0, rate_burst=2)
INT8 = {"name": "int8", "chunk": 256}
TOPK = {"name": "topk", "fraction": 0.01, "values": INT8}
DP = PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=0.5, clip_norm=5.0, seed=9)

CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any] | None, bool]] = {
    "fedbuff": ("fedbuff", {"buffer_size": 3}, None, False),
    "fedbuff-momentum": ("fedbuff", {"buffer_size": 3, "momentum": 0.5}, None, False),
    "fedbuff-default-defence": ("fedbuff", {"buffer_size": 3}, {}, False),
    "fedbuff-median": ("fedbuff", {"buffer_size": 3}, {"aggregator": "median"}, False),
    "fedbuff-dp": ("fedbuff", {"buffer_size": 3}, None, True),
    "fedasync": ("fedasync", {"alpha": 0.5}, {"aggregator": "mean"}, False),
    "fedavg": ("fedavg", {"round_size": 3, "deadline_s": 30.0}, None, False),
}


def _strategy(case: str) -> Strategy:
    name, params, robust, dp = CASES[case]
    staleness = None if name == "fedavg" else {"function": "polynomial", "a": 0.5}
    return make_strategy(name, params, staleness, robust, privacy=DP if dp else None)


def _traffic() -> list[tuple[str, bytes, float]]:
    """(device, payload, virtual seconds): int8 and top-k deltas, some clipped by the fixed
    bound, a device's second update into an open buffer, a burst over the rate limit, an
    undecodable payload and a replay."""
    rng = np.random.default_rng(11)
    out: list[tuple[str, bytes, float]] = []
    seqs: dict[str, int] = {}
    for i in range(14):
        device = f"d{i % 5}"
        seqs[device] = seqs.get(device, 0) + 1
        scale = 0.4 if i % 4 else 0.05  # some deltas exceed max_norm: clipped
        delta = rng.standard_normal(N).astype(np.float32) * np.float32(scale)
        codec = TOPK if i % 3 == 0 else INT8
        base = max(0, i // 3 - 1)  # stale by a version or two
        payload = update_bytes(
            MANIFEST, delta, device=device, seq=seqs[device], base=base, codec=codec
        )
        out.append((device, payload, 10.0 * i))
    burst = [
        update_bytes(MANIFEST, np.full(N, 1e-3, np.float32), device="burst", seq=s)
        for s in (1, 2, 3)
    ]
    out += [("burst", p, 200.0) for p in burst]  # the third is over the burst of 2
    out.append(("d1", b"\x93not an update", 210.0))
    out.append(("d0", out[0][1], 220.0))  # an old seq again: REPLAY
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_bytes_give_the_same_model_in_the_simulator_and_the_server(
    case: str, tmp_path: Path
) -> None:
    traffic = _traffic()
    sim = SimServer(
        _strategy(case),
        Admission(MANIFEST, LIMITS),
        np.zeros(N, np.float32),
        serving=ServingAverage(0.5),
    )
    core = ServerCore(
        MANIFEST,
        np.zeros(N, np.float32),
        _strategy(case),
        tmp_path,
        LIMITS,
        serving=ServingAverage(0.5),
    )
    core.recover()
    fed_to_sim: list[object] = []  # what the simulator's strategy is handed: codec-form deltas
    real_apply = sim.strategy.apply_contribution

    def spy(model: np.ndarray, version: int, update: Contribution) -> StepResult:
        fed_to_sim.append(update)
        return real_apply(model, version, update)

    sim.strategy.apply_contribution = spy  # type: ignore[method-assign]
    core_reasons: list[str] = []
    for device, payload, now in traffic:
        before_rejected = sum(sim.rejected.values())
        sim.receive(device, payload, now)
        outcome = core.submit(device, payload, now=now)
        if outcome.staleness is not None:  # applied: time passes, as the simulator lets it
            core.tick(now)
        core.commit()
        if not outcome.ack.accepted:
            core_reasons.append(outcome.ack.reason.value)
        assert sum(sim.rejected.values()) - before_rejected == (not outcome.ack.accepted)
        assert sim.version == core.version
        assert sim.model.tobytes() == core.model.tobytes(), f"models differ after {device}"
    assert sorted(core_reasons) == sorted(sim.rejected.elements())
    for reason in (Reason.RATE_LIMITED, Reason.REPLAY, Reason.SCHEMA):
        assert reason.value in core_reasons
    assert len(fed_to_sim) == sim.accepted > 5
    assert all(isinstance(u, FusedUpdate) for u in fed_to_sim)  # the fused path, as the server
    assert sim.version == core.version >= 2
    assert np.abs(sim.model).max() > 0
    assert sim.serving_model.tobytes() == core.serving_model.tobytes()
    assert sim.strategy.state_dict().keys() == core.strategy.state_dict().keys()
    core.close()
