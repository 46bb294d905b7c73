"""Robust aggregation: options a strategy carries against hostile devices (issue 15).

`aggregators` (mean / trimmed mean / median, pure), `norm_bound` (adaptive L2 bound), `defence`
(the per-strategy state and the config that `[strategy.robust]` in server.toml fills).
"""

from __future__ import annotations

from server.robust.aggregators import Aggregator, aggregate, trim_count
from server.robust.aggregators import warm_up as warm_up_kernels
from server.robust.defence import Defence, DeviceScore, RobustConfig
from server.robust.norm_bound import AdaptiveNormBound, BoundAction
from server.robust.presets import DEFENCES, defence

__all__ = [
    "DEFENCES",
    "AdaptiveNormBound",
    "Aggregator",
    "BoundAction",
    "Defence",
    "DeviceScore",
    "RobustConfig",
    "aggregate",
    "defence",
    "trim_count",
    "warm_up_kernels",
]
