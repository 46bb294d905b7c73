"""The simulator's downlink: the protocol's pushes counted by hand, and a run with deltas beside
the same run with whole offers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fleet.sim.downlink import SimDownlink
from fleet.sim.runner import parse_strategy
from tests.unit.sim.fakes import MANIFEST, initial_weights
from tests.unit.sim.test_engine import _run


def test_pushes_by_hand() -> None:
    rng = np.random.default_rng(0)
    w0 = initial_weights() + rng.normal(0, 1, MANIFEST.num_params).astype(np.float32)
    down = SimDownlink(MANIFEST, w0, devices=3, delta_codec={"name": "int8"})
    whole = down.whole_size
    assert whole > 4 * MANIFEST.num_params
    down.connect(0)  # newcomer: the whole offer (no delta retained yet)
    down.connect(1)
    assert (down.bytes, down.whole_float32_bytes) == (2 * whole, 2 * whole)
    down.publish(
        w0 + rng.normal(0, 0.1, w0.size).astype(np.float32), 1
    )  # two connected devices, one delta each
    delta = down.delta_size
    assert 0 < delta < whole / 2
    assert down.bytes == 2 * whole + 2 * delta and down.whole_float32_bytes == 4 * whole
    down.disconnect(1)  # holds v1
    down.publish(w0 + rng.normal(0, 0.1, w0.size).astype(np.float32), 2)
    down.connect(1)  # holds v1, the retained delta is v1 -> v2: it applies
    assert down.bytes == 2 * whole + 4 * delta  # (v2's delta to device 0, retained to device 1)
    down.disconnect(1)
    down.publish(w0 + rng.normal(0, 0.1, w0.size).astype(np.float32), 3)
    last = w0 + rng.normal(0, 0.1, w0.size).astype(np.float32)
    down.publish(last, 4)
    down.connect(1)  # holds v2: missed v3, so the retained delta v3 -> v4 does not apply
    assert down.bytes == 2 * whole + 7 * delta + whole
    down.connect(2)  # a newcomer: whole offer + the retained delta
    assert down.bytes == 4 * whole + 8 * delta
    assert down.model.tobytes() != last.tobytes()  # devices hold the chain, not M
    assert np.abs(down.model - last).max() < 0.01


def test_whole_offers_only_cost_exactly_the_baseline() -> None:
    result, _server = _run(parse_strategy("fedbuff:5:polynomial"))
    assert result.downlink_bytes == result.downlink_whole_float32_bytes > 0


def test_deltas_cut_the_downlink_at_about_the_same_accuracy() -> None:
    spec = parse_strategy("fedbuff:5:polynomial")
    whole, _ = _run(spec)
    delta, _ = _run(replace(spec, downlink_codec={"name": "int4"}))
    assert delta.downlink_whole_float32_bytes == whole.downlink_whole_float32_bytes
    # a 650-parameter model: a delta's ~450-byte header caps the ratio well below 8x here
    assert delta.downlink_whole_float32_bytes > 2.5 * delta.downlink_bytes
    assert abs(delta.final_accuracy - whole.final_accuracy) < 0.03
    assert delta.label.endswith("/down-int4")
