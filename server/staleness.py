"""Staleness weights: how much an update on an old base version still counts.

`tau = current_version - base_version` (>= 0). Every function maps tau to a weight in (0, 1], is
pure, and equals 1 at tau = 0, so a fresh update is never discounted.

    constant(tau)            = 1
    polynomial(tau, a)       = (1 + tau) ** -a
    hinge(tau, a, b)         = 1                          if tau <= b
                               1 / (a * (tau - b) + 1)    otherwise
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from protocol.errors import ConfigError

__all__ = [
    "STALENESS_FUNCTIONS",
    "StalenessFn",
    "constant",
    "hinge",
    "make_staleness",
    "polynomial",
]

StalenessFn = Callable[[int], float]


def _check_tau(tau: int) -> None:
    if tau < 0:
        raise ValueError(f"staleness tau must be >= 0, got {tau}")


def constant(tau: int) -> float:
    _check_tau(tau)
    return 1.0


def polynomial(tau: int, a: float = 0.5) -> float:
    _check_tau(tau)
    return float((1.0 + tau) ** -a)


def hinge(tau: int, a: float = 10.0, b: float = 4.0) -> float:
    _check_tau(tau)
    if tau <= b:
        return 1.0
    return 1.0 / (a * (tau - b) + 1.0)


STALENESS_FUNCTIONS: dict[str, Callable[..., float]] = {
    "constant": constant,
    "polynomial": polynomial,
    "hinge": hinge,
}


def make_staleness(name: str, params: Mapping[str, Any] | None = None) -> StalenessFn:
    """A one-argument weight function from a config name and its parameters (validated)."""
    if name not in STALENESS_FUNCTIONS:
        raise ConfigError(
            f"staleness.function: unknown {name!r} (choose from {sorted(STALENESS_FUNCTIONS)})"
        )
    allowed = {"constant": set(), "polynomial": {"a"}, "hinge": {"a", "b"}}[name]
    kwargs: dict[str, float] = {}
    for key, value in (params or {}).items():
        if key not in allowed:
            raise ConfigError(f"staleness.{key}: not a parameter of {name!r} ({sorted(allowed)})")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"staleness.{key}: must be a finite number, got {value!r}")
        if value < 0:
            raise ConfigError(f"staleness.{key}: must be >= 0, got {value!r}")
        kwargs[key] = float(value)
    return partial(STALENESS_FUNCTIONS[name], **kwargs)
