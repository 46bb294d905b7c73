"""`[privacy]` in server.toml: user-level differential privacy for FedBuff (and sync FedAvg).

    [privacy]
    epsilon = 8.0              # budget: the flush that would take epsilon past this is refused
    delta = 1e-5               # at most 1 / number of devices
    noise_multiplier = 1.1     # sigma: noise std = sigma * clip_norm on each flush's sum ...
    # planned_flushes = 200    # ... or calibrate sigma so this many flushes spend `epsilon`
    clip_norm = 1.0            # C: every accepted delta is clipped to this L2 norm (initial C
                               #    when adaptive)
    adaptive_clip = false      # Andrew et al. 2021: C follows a quantile of update norms
    target_quantile = 0.5      #   the fraction of updates left unclipped
    clip_learning_rate = 0.2   #   geometric step of C per flush
    # clipped_count_std = ...  #   noise on the unclipped count (default: buffer size / 20)
    accountant = "rdp"         # rdp | pld (dp-accounting)

The server draws a secret 256-bit noise key on first start and keeps it in its
checkpoint (never in a published model), so replaying the log after a crash re-creates the same
noise bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import ConfigError
from server.privacy.accountant import Method, calibrate_noise_multiplier

__all__ = ["PrivacyConfig", "parse_privacy"]

_KEYS = {
    "epsilon",
    "delta",
    "noise_multiplier",
    "planned_flushes",
    "clip_norm",
    "adaptive_clip",
    "target_quantile",
    "clip_learning_rate",
    "clipped_count_std",
    "accountant",
    "seed",
}


@dataclass(frozen=True)
class PrivacyConfig:
    epsilon: float  # budget at `delta`
    delta: float
    noise_multiplier: float  # sigma of one flush (the sum's and the count's noise together)
    clip_norm: float = 1.0  # C (initial C when adaptive)
    adaptive_clip: bool = False
    target_quantile: float = 0.5  # Andrew et al.'s default: clip at the median norm
    clip_learning_rate: float = 0.2  # their geometric rate eta_C
    clipped_count_std: float | None = None  # None: expected updates per flush / 20 (Flower, TFP)
    accountant: Method = Method.RDP
    seed: int | None = None  # None: a secret random key (production)

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and not math.isnan(self.epsilon)):
            raise ValueError(f"privacy.epsilon must be > 0, got {self.epsilon}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"privacy.delta must be in (0, 1), got {self.delta}")
        for name in ("noise_multiplier", "clip_norm", "clip_learning_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"privacy.{name} must be a positive finite number, got {value}")
        if not 0.0 < self.target_quantile < 1.0:
            raise ValueError(
                f"privacy.target_quantile must be in (0, 1), got {self.target_quantile}"
            )
        std = self.clipped_count_std
        if std is not None and not (math.isfinite(std) and std > 0):
            raise ValueError(f"privacy.clipped_count_std must be > 0, got {std}")


def _number(doc: Mapping[str, Any], key: str) -> float:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"privacy.{key}: must be a number, got {value!r}")
    return float(value)


def parse_privacy(doc: Mapping[str, Any], *, allow_seed: bool = False) -> PrivacyConfig:
    """Validate the `[privacy]` table; calibrates sigma when `planned_flushes` is given.

    `seed` is refused unless `allow_seed` (the simulator): a derivable noise key lets anyone
    who knows the seed subtract the noise, so a server.toml that sets it would publish models
    whose reported epsilon protects nothing."""
    extra = sorted(set(doc) - _KEYS)
    if extra:
        raise ConfigError(f"privacy.{extra[0]}: unknown key (allowed: {sorted(_KEYS)})")
    for key in ("epsilon", "delta"):
        if key not in doc:
            raise ConfigError(f"privacy.{key}: required")
    epsilon, delta = _number(doc, "epsilon"), _number(doc, "delta")
    has_sigma, has_plan = "noise_multiplier" in doc, "planned_flushes" in doc
    if has_sigma == has_plan:
        raise ConfigError(
            "privacy: set exactly one of noise_multiplier (sigma) or planned_flushes "
            "(sigma is then calibrated so that many flushes spend epsilon)"
        )
    method_name = doc.get("accountant", "rdp")
    try:
        method = Method(method_name)
    except ValueError:
        raise ConfigError(f"privacy.accountant: 'rdp' or 'pld', got {method_name!r}") from None
    if has_plan:
        plan = doc["planned_flushes"]
        if isinstance(plan, bool) or not isinstance(plan, int) or plan < 1:
            raise ConfigError(f"privacy.planned_flushes: an integer >= 1, got {plan!r}")
        if not (math.isfinite(epsilon) and epsilon > 0 and 0 < delta < 1):
            raise ConfigError("privacy: calibration needs a finite epsilon > 0 and 0 < delta < 1")
        sigma = calibrate_noise_multiplier(epsilon, delta, plan, method)
    else:
        sigma = _number(doc, "noise_multiplier")
    adaptive = doc.get("adaptive_clip", False)
    if not isinstance(adaptive, bool):
        raise ConfigError(f"privacy.adaptive_clip: true or false, got {adaptive!r}")
    seed = doc.get("seed")
    if seed is not None and not allow_seed:
        raise ConfigError(
            "privacy.seed: a fixed noise key makes the noise public (whoever knows the seed "
            "subtracts it); only the simulator accepts it. Remove it: the server draws a secret "
            "key on first start and keeps it in its state folder"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"privacy.seed: an integer, got {seed!r}")
    std = doc.get("clipped_count_std")
    try:
        return PrivacyConfig(
            epsilon=epsilon,
            delta=delta,
            noise_multiplier=sigma,
            clip_norm=_number(doc, "clip_norm") if "clip_norm" in doc else 1.0,
            adaptive_clip=adaptive,
            target_quantile=(_number(doc, "target_quantile") if "target_quantile" in doc else 0.5),
            clip_learning_rate=(
                _number(doc, "clip_learning_rate") if "clip_learning_rate" in doc else 0.2
            ),
            clipped_count_std=None if std is None else _number(doc, "clipped_count_std"),
            accountant=method,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
