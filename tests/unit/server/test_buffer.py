"""The open buffer (one owner of sum, weight, rows, devices, DP clip counts) and the reducer (the
one place that decides mean, rows or DP-noised mean, and refuses what does not compose)."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.errors import Reason, RejectedUpdate
from server.buffer import OpenBuffer
from server.privacy import DpMechanism, PrivacyConfig
from server.reducer import Reducer, Reduction
from server.robust import Aggregator, RobustConfig
from server.strategies import AdmittedUpdate, FedAvg, FedBuff, StateDict

DP = PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0, clip_norm=1.0, seed=3)
MEDIAN = RobustConfig(aggregator=Aggregator.MEDIAN, norm_multiplier=None)
MEAN = RobustConfig(aggregator=Aggregator.MEAN, norm_multiplier=None)


def _update(device: str, values: list[float], samples: int = 1) -> AdmittedUpdate:
    return AdmittedUpdate(device, 1, 0, samples, np.array(values, np.float32))


@pytest.mark.parametrize(
    ("robust", "privacy", "reason"),
    [
        (MEAN, False, Reason.DEVICE_LIMIT),
        (MEDIAN, False, Reason.DEVICE_LIMIT),
        (None, True, Reason.DP_BUFFER),
        (MEAN, True, Reason.DP_BUFFER),  # both ask for it: one device set, DP's reason
        (RobustConfig(one_per_device=False, norm_multiplier=None), False, None),
        (None, False, None),
    ],
)
def test_one_device_set_refuses_a_second_update_with_the_reason_devices_always_saw(
    robust: RobustConfig | None, privacy: bool, reason: Reason | None
) -> None:
    s = FedBuff(buffer_size=3, robust=robust, privacy=DpMechanism(DP, 3) if privacy else None)
    s.apply(np.zeros(2, np.float32), 0, _update("a", [0.1, 0.2]))
    assert s.buffer.devices == ["a"]
    checks = [s.check_device, lambda d: s.screen(d, 0.1)]
    refusals = []
    for check in checks:
        try:
            check("a")
        except RejectedUpdate as exc:
            refusals.append(exc.reason)
    # DP refuses before the delta is decoded, the robust limit after the norm: as before
    assert refusals == ([] if reason is None else [reason])
    s.check_device("b")
    assert s.screen("b", 0.1) == 1.0


def test_the_buffer_state_round_trips_and_a_flush_clears_it() -> None:
    buf = OpenBuffer(Reason.DEVICE_LIMIT)
    total = buf.sum_for(3)
    total += np.float32([1, 2, 3])
    buf.joined("a", 2.0)
    buf.counted_clip(1, True)
    np.copyto(buf.rows.new_row(3, 0.5), np.float32([4, 5, 6]))
    again = OpenBuffer(Reason.DEVICE_LIMIT)
    again.load_state_dict(buf.state_dict())
    assert (again.weight, again.count, again.devices) == (2.0, 1, ["a"])
    assert (again.unclipped, again.clipped) == (1, 1)
    assert again.sum is not None
    np.testing.assert_array_equal(again.sum, [1, 2, 3])
    np.testing.assert_array_equal(again.rows.dense(), [[4, 5, 6]])
    np.testing.assert_array_equal(again.rows.weights, [0.5])
    with pytest.raises(RejectedUpdate):
        again.check_device("a")
    again.clear()
    assert (again.sum, again.weight, again.count, again.devices) == (None, 0.0, 0, [])
    assert (again.unclipped, again.clipped, again.rows.count) == (0, 0, 0)
    again.check_device("a")


def _older_fedbuff_state(s: FedBuff) -> StateDict:
    """What FedBuff's state_dict wrote before the buffer had one owner."""
    new = s.state_dict()
    old = {k: v for k, v in new.items() if not k.startswith("buffer.")}
    old |= {"weight": new["buffer.weight"], "count": new["buffer.count"]}
    if "buffer.sum" in new:
        old["sum"] = new["buffer.sum"]
    if s.defence is not None:
        old["robust_devices"] = new["buffer.devices"]
        for key in ("rows", "row_weights"):
            if f"buffer.{key}" in new:
                old[f"robust_{key}"] = new[f"buffer.{key}"]
    if s.privacy is not None:
        old |= {
            "dp_unclipped": new["buffer.unclipped"],
            "dp_count": new["buffer.clipped"],
            "dp_devices": "\n".join(sorted(new["buffer.devices"].split("\n"))),
        }
    return old


@pytest.mark.parametrize("setting", ["plain", "rows", "dp", "dp+mean"])
def test_an_older_fedbuff_checkpoint_mid_buffer_loads_and_steps_the_same(setting: str) -> None:
    rng = np.random.default_rng(5)
    robust = {"plain": None, "rows": MEDIAN, "dp": None, "dp+mean": MEAN}[setting]

    def make() -> FedBuff:
        dp = DpMechanism(DP, 4) if setting.startswith("dp") else None
        return FedBuff(buffer_size=4, robust=robust, privacy=dp)

    ups = [_update(f"d{i}", list(rng.standard_normal(5) * 0.3)) for i in range(4)]
    model = np.zeros(5, np.float32)
    a = make()
    for u in ups[:3]:
        a.apply(model, 0, u)
    old = _older_fedbuff_state(a)
    assert not any(k.startswith("buffer.") for k in old)
    b = make()
    b.load_state_dict(old)
    # a plain FedBuff kept no device list before; the others did (the defence's or DP's)
    assert b.buffer.devices == ([] if setting == "plain" else ["d0", "d1", "d2"])
    assert b.pending == 3
    if setting != "plain":  # a plain FedBuff takes any number of updates from a device
        with pytest.raises(RejectedUpdate):
            b.check_device("d1")
            b.screen("d1", 0.1)
    ra, rb = a.apply(model, 0, ups[3]), b.apply(model, 0, ups[3])
    assert ra.stepped and rb.stepped
    np.testing.assert_array_equal(ra.model.view(np.uint32), rb.model.view(np.uint32))
    assert a.state_dict().keys() == b.state_dict().keys()


def test_an_older_fedavg_checkpoint_with_its_sample_count_loads() -> None:
    a = FedAvg(round_size=3)
    model = np.zeros(2, np.float32)
    a.apply(model, 0, _update("a", [1.0, 2.0], samples=3))
    a.apply(model, 0, _update("b", [4.0, 0.0], samples=1))
    new = a.state_dict()
    old = {k: v for k, v in new.items() if not k.startswith("buffer.")}
    old |= {"samples": 4, "count": 2, "sum": new["buffer.sum"]}
    b = FedAvg(round_size=3)
    b.load_state_dict(old)
    assert (b.buffer.weight, b.pending) == (4.0, 2)
    ra = a.apply(model, 0, _update("c", [0.0, 4.0], samples=4))
    rb = b.apply(model, 0, _update("c", [0.0, 4.0], samples=4))
    np.testing.assert_array_equal(ra.model, rb.model)
    np.testing.assert_array_equal(rb.model, [7 / 8, 22 / 8])  # (3*[1,2] + [4,0] + 4*[0,4]) / 8


@pytest.mark.parametrize(
    ("robust", "privacy", "buffered", "weighted", "expected"),
    [
        (None, False, True, False, Reduction.MEAN),
        (MEAN, False, True, False, Reduction.MEAN),
        (MEDIAN, False, True, False, Reduction.ROWS),
        (MEDIAN, False, False, False, Reduction.MEAN),  # FedAsync: no buffer, no rows
        (None, True, True, False, Reduction.DP_MEAN),
        (MEAN, True, True, False, Reduction.DP_MEAN),
        (None, False, True, True, Reduction.MEAN),
        (None, True, False, False, "FedAsync releases a new model"),
        (MEDIAN, True, True, False, "coordinate-wise robust aggregator"),
        (None, True, True, True, "sample_weighted weights a delta"),
        (MEDIAN, False, True, True, "sample_weighted cannot be combined"),
    ],
)
def test_the_reducer_decides_what_composes(
    robust: RobustConfig | None,
    privacy: bool,
    buffered: bool,
    weighted: bool,
    expected: Reduction | str,
) -> None:
    dp = DpMechanism(DP, 4) if privacy else None
    if isinstance(expected, Reduction):
        assert Reducer(robust, dp, buffered=buffered, sample_weighted=weighted).rule is expected
        return
    with pytest.raises(ValueError, match=expected):
        Reducer(robust, dp, buffered=buffered, sample_weighted=weighted)
