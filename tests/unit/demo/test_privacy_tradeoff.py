"""What the demo tells a user about a DP configuration before it runs, and that the fleet it
recommends for DP is a command the simulator accepts."""

from __future__ import annotations

import argparse
import shlex

import pytest

from fleet.privacy_args import _LEARNS, privacy_tradeoff
from fleet.sim.cli import add_arguments


def test_the_noise_per_coordinate_is_sigma_c_over_k() -> None:
    lines = privacy_tradeoff({"epsilon": 8.0, "delta": 1e-5, "noise_multiplier": 2.0}, 5000, 5)
    assert any("sigma*C/K = 0.4" in line for line in lines)  # 2.0 * 1.0 / 5


@pytest.mark.parametrize(("delta", "devices", "weak"), [(0.05, 20, True), (1e-5, 5000, False)])
def test_a_weak_delta_is_named(delta: float, devices: int, weak: bool) -> None:
    table = {"epsilon": 8.0, "delta": delta, "noise_multiplier": 1.0}
    lines = privacy_tradeoff(table, devices, 5)
    assert any("is weak" in line for line in lines) is weak


def test_the_recommended_dp_fleet_parses() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(shlex.split(_LEARNS)[2:])
    assert args.devices == 5000 and args.dp_epsilon == 8.0
