"""The simulator against fakes at the edges: a numpy softmax learner, small fleets, real strategies,
real admission, real codecs and real ClientUpdate bytes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from fleet.partition import digits_dataset, dirichlet_partition
from fleet.sim.engine import RunResult
from fleet.sim.profiles import Availability, FleetConfig, make_fleet
from fleet.sim.runner import Experiment, StrategySpec, build_strategy, parse_strategy, run_one
from fleet.sim.server_side import SimServer
from fleet.sim.training import LocalBudget
from protocol.errors import ConfigError
from protocol.messages import ClientUpdate, EncodedVector
from protocol.update_header import encode_update_compact
from tests.unit.sim.fakes import MANIFEST, SoftmaxTrainer, initial_weights

DEVICES = 60
EXP = Experiment(concurrency=13, duration_s=3 * 3600.0, eval_every_s=600.0, deadline_s=120.0)


@cache
def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = digits_dataset(0)
    return d.x_train, d.y_train, d.x_test, d.y_test


def _run(
    spec: StrategySpec,
    exp: Experiment = EXP,
    fleet_cfg: FleetConfig | None = None,
    seed: int = 0,
    record: bool = False,
) -> tuple[RunResult, SimServer]:
    data = _data()
    slices = dirichlet_partition(data[1], DEVICES, alpha=0.5, seed=seed, min_size=16)
    cfg = fleet_cfg or FleetConfig(median_s_per_sample=2.0, start_hour=0.0)
    fleet = make_fleet(DEVICES, cfg, exp.duration_s, seed=seed)
    return run_one(
        spec,
        exp,
        manifest=MANIFEST,
        initial=initial_weights(),
        fleet=fleet,
        slices=slices,
        data=data,
        trainer=SoftmaxTrainer(),
        seed=seed,
        record=record,
    )


ALL = [
    "fedavg",
    "fedasync:constant",
    "fedasync:polynomial",
    "fedasync:hinge",
    "fedbuff:5:constant",
    "fedbuff:5:polynomial",
    "fedbuff:5:hinge",
]


@pytest.mark.parametrize("name", ALL)
def test_simulator_models_are_bit_identical_to_production_strategies(name: str) -> None:
    spec = parse_strategy(name)
    result, server = _run(spec, record=True)
    assert server.calls is not None and result.accepted > 50
    # A fresh production object fed the same admitted updates and ticks in the same order.
    direct = build_strategy(spec, EXP)
    model, version = initial_weights(), 0
    versions = []
    for call in server.calls:
        if call.op == "apply":
            assert call.update is not None
            step = direct.apply(model, version, call.update)
        else:
            step = direct.tick(model, version, call.now)
        model, version = step.model, step.version
        versions.append(version)
    assert version == server.version == result.curve[-1].version > 5
    assert model.dtype == np.float32
    assert model.tobytes() == server.model.tobytes()
    assert direct.state_dict().keys() == server.strategy.state_dict().keys()


def test_fedasync_matches_the_formula_by_hand() -> None:
    """x_T = x_0 + sum_t alpha * (1 + tau_t) ** -0.5 * delta_t, applied in arrival order."""
    result, server = _run(parse_strategy("fedasync:polynomial"), record=True)
    assert server.calls is not None
    x = initial_weights()
    version = 0
    for call in server.calls:
        if call.op == "apply" and call.update is not None:
            tau = version - call.update.base_version
            w = EXP.fedasync_alpha * (1.0 + tau) ** -0.5
            x = x + np.float32(w) * call.update.delta
            version += 1
    assert np.array_equal(x, server.model)
    assert result.accepted == version


def test_runs_are_deterministic_given_the_seed() -> None:
    spec = parse_strategy("fedbuff:5")
    a, sa = _run(spec, seed=3)
    b, sb = _run(spec, seed=3)
    c, _ = _run(spec, seed=4)
    assert a.curve == b.curve and a.counts == b.counts
    assert sa.model.tobytes() == sb.model.tobytes()
    assert a.curve != c.curve


def test_uplink_bytes_are_real_message_sizes_and_codecs_shrink_them() -> None:
    f32, _ = _run(parse_strategy("fedasync"))
    i8, _ = _run(parse_strategy("fedasync", {"name": "int8", "chunk": 256}))
    n = MANIFEST.num_params
    one = EncodedVector({"name": "float32", "lossless": "none"}, bytes(4 * n), n)
    msg = ClientUpdate(MANIFEST.model_id, 1, "sim-00001", 1, 16, 2, one, {})
    per_update = len(encode_update_compact(msg))  # the simulator sends what agents send
    # same fleet, same scheduling: float32 bytes are exactly accepted x message size (+- a few
    # bytes of varint width for seq/base_version/num_samples)
    assert abs(f32.uplink_bytes / f32.accepted - per_update) < 8
    assert 3.0 < (f32.uplink_bytes / f32.accepted) / (i8.uplink_bytes / i8.accepted) < 4.1
    assert i8.final_accuracy > 0.5


def test_sync_rounds_close_at_round_size_and_abort_the_over_selected() -> None:
    spec = parse_strategy("fedavg")
    result, server = _run(spec, record=True)
    assert server.calls is not None
    assert result.rejected == {}  # leftovers are stopped, never sent stale
    assert result.counts["aborted"] > 0  # over-selection at work
    direct = build_strategy(spec, EXP)
    model, version, in_round, sizes = initial_weights(), 0, 0, []
    for call in server.calls:
        if call.update is not None:
            step = direct.apply(model, version, call.update)
            in_round += 1
        else:
            step = direct.tick(model, version, call.now)
        if step.stepped:
            sizes.append(in_round)
            in_round = 0
        model, version = step.model, step.version
    assert len(sizes) == result.curve[-1].version
    assert max(sizes) == EXP.round_size  # most rounds close on the M-th arrival ...
    assert min(sizes) >= 1  # ... a few at the deadline with fewer


def test_dropouts_and_ineligibility_are_counted_only_when_they_can_happen() -> None:
    spec = parse_strategy("fedasync")
    calm = FleetConfig(dropout_p=0.0, availability=Availability.ALWAYS)
    r0, _ = _run(spec, fleet_cfg=calm)
    assert r0.counts.get("dropouts", 0) == 0 and r0.counts.get("ineligible", 0) == 0
    r1, _ = _run(spec, fleet_cfg=replace(calm, dropout_p=0.3))
    assert r1.counts["dropouts"] > 0.2 * r1.counts["sessions"]


def test_learning_happens_and_is_recorded_every_eval_period() -> None:
    result, _ = _run(parse_strategy("fedbuff:5"))
    times = [p.t for p in result.curve]
    assert times[0] == 0.0 and times[-1] == EXP.duration_s
    assert all(b - a <= EXP.eval_every_s + 1e-9 for a, b in itertools.pairwise(times))
    assert result.curve[0].accuracy < 0.2
    assert result.final_accuracy > 0.8


def test_budget_caps_samples_per_session() -> None:
    exp = replace(EXP, budget=LocalBudget(max_samples=4, batch_size=2))
    _result, server = _run(parse_strategy("fedasync"), exp=exp, record=True)
    assert server.calls is not None
    assert {c.update.num_samples for c in server.calls if c.update is not None} == {4}


@pytest.mark.parametrize(
    "bad", ["fedprox", "fedasync:linear", "fedbuff:0", "fedbuff:x", "fedavg:3"]
)
def test_bad_strategy_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="--strategy"):
        parse_strategy(bad)


def test_device_seconds_count_every_busy_slot() -> None:
    # always available, no drop-outs: async refills a slot the moment it frees, so `concurrency`
    # devices are busy from t = 0 and the device time at every evaluation is concurrency * t
    calm = FleetConfig(median_s_per_sample=2.0, dropout_p=0.0, availability=Availability.ALWAYS)
    r, _ = _run(parse_strategy("fedbuff:5"), fleet_cfg=calm)
    assert r.accepted > 100
    for p in r.curve:
        assert p.device_seconds == pytest.approx(EXP.concurrency * p.t, rel=1e-9)
    # sync FedAvg aborts the round's leftovers: less device time than it had slots for, never more
    s, _ = _run(parse_strategy("fedavg"), fleet_cfg=calm)
    assert 0 < s.curve[-1].device_seconds <= EXP.concurrency * EXP.duration_s


def test_async_concurrency_over_commits_async_runs_only() -> None:
    calm = FleetConfig(median_s_per_sample=2.0, dropout_p=0.0, availability=Availability.ALWAYS)
    over = replace(EXP, async_concurrency=2 * EXP.concurrency)
    r, _ = _run(parse_strategy("fedbuff:5"), exp=over, fleet_cfg=calm)
    for p in r.curve:  # twice the devices busy all the time
        assert p.device_seconds == pytest.approx(2 * EXP.concurrency * p.t, rel=1e-9)
    # the sync baseline keeps selecting `concurrency` per round: bit for bit the same run
    a, sa = _run(parse_strategy("fedavg"), fleet_cfg=calm)
    b, sb = _run(parse_strategy("fedavg"), exp=over, fleet_cfg=calm)
    assert a.curve == b.curve and a.counts == b.counts
    assert np.array_equal(sa.model, sb.model)
