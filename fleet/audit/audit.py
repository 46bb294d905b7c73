"""The privacy audit of one configuration: canaries and two-world tests, with and without noise.

    audited lower bound = Clopper-Pearson bound of the one (method, statistic, threshold) chosen
                          on half the scores, tested on the other half       (bounds.py)
    per statistic       = the maximum over thresholds on all scores (per-threshold confidence)
    verdict             = the audited bound <= the epsilon the server reports for those releases

A bound above the reported epsilon proves the reported epsilon wrong (at 95%). A bound below it
proves nothing about the epsilon: the attacks may be weak. The power check runs the same audit
with (almost) no noise and must find a large bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.audit.bounds import (
    clopper_pearson_epsilon,
    gaussian_fit_epsilon,
    held_out_epsilon,
    pooled_gaussian_epsilon,
)
from fleet.audit.canaries import run_canaries
from fleet.audit.scenario import Scenario
from fleet.audit.two_worlds import run_two_worlds

__all__ = ["AuditReport", "AuditSettings", "audit"]

METHOD = (
    "Clopper-Pearson 95% lower bound; statistic and threshold chosen on half the scores, tested "
    "on the other half; scores from two-world tests (zero-out neighbour, fresh noise key per "
    "trial) and one-shot canaries (Andrew et al. 2024)"
)


@dataclass(frozen=True)
class AuditSettings:
    releases: int = 4  # published models per trial (noised flushes)
    trials: int = 200  # per world, for the two-world tests
    canaries: int = 4  # inserted per run (and as many never-inserted directions)
    canary_runs: int = 50  # independent runs whose canary scores pool (1 = one-shot)
    seed: int = 0
    power_check: bool = True  # also audit the configuration without noise


@dataclass(frozen=True)
class AuditReport:
    name: str
    reported_epsilon: float
    delta: float
    lower_bound: float  # held out: valid at 95% for the audit as a whole
    chosen: str  # the "method/statistic" it was chosen for
    lower_bounds: dict[str, float]  # "method/statistic" -> max over thresholds, all scores
    estimates: dict[str, float]  # canary statistic -> Gaussian-fit epsilon (Andrew et al.)
    pooled_estimates: dict[str, float]  # the same with one pooled variance
    settings: AuditSettings
    canaries: int  # inserted over all runs
    dp_off_lower_bound: float | None = None
    dp_off_lower_bounds: dict[str, float] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        """No lower bound exceeds the reported epsilon."""
        return self.lower_bound <= self.reported_epsilon

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "configuration": self.name,
            "reported_epsilon": self.reported_epsilon,
            "delta": self.delta,
            "audited_epsilon_lower_bound": self.lower_bound,
            "consistent": self.consistent,
            "method": METHOD,
            "chosen_statistic": self.chosen,
            "max_over_thresholds_per_statistic": self.lower_bounds,
            "gaussian_fit_epsilon": self.estimates,
            "gaussian_fit_epsilon_pooled_variance": self.pooled_estimates,
            "canaries": self.canaries,
            "canary_runs": s.canary_runs,
            "releases": s.releases,
            "trials": s.trials,
            "dp_off_lower_bound": self.dp_off_lower_bound,
            "dp_off_max_over_thresholds_per_statistic": self.dp_off_lower_bounds,
            "seed": s.seed,
        }


def _bounds(scenario: Scenario, s: AuditSettings, scratch: Path | None) -> dict[str, Any]:
    worlds = run_two_worlds(
        scenario, releases=s.releases, trials=s.trials, seed=s.seed, scratch=scratch
    )
    canaries = run_canaries(
        scenario,
        releases=s.releases,
        canaries=s.canaries,
        runs=s.canary_runs,
        seed=s.seed,
        scratch=scratch,
    )
    absent = {f"two_worlds/{k}": v for k, v in worlds.absent.items()}
    present = {f"two_worlds/{k}": v for k, v in worlds.present.items()}
    absent |= {f"canaries/{k}": v for k, v in canaries.absent.items()}
    present |= {f"canaries/{k}": v for k, v in canaries.present.items()}
    delta = scenario.privacy.delta
    bounds = {k: clopper_pearson_epsilon(a, present[k], delta) for k, a in absent.items()}
    held_out, chosen = held_out_epsilon(absent, present, delta)
    fits = {
        k: gaussian_fit_epsilon(canaries.absent[k], canaries.present[k], canaries.delta)
        for k in canaries.absent
    }
    pooled = {
        k: pooled_gaussian_epsilon(canaries.absent[k], canaries.present[k], canaries.delta)
        for k in canaries.absent
    }
    reported = max(worlds.reported_epsilon, canaries.reported_epsilon)
    return {
        "held_out": held_out,
        "chosen": chosen,
        "bounds": bounds,
        "fits": fits,
        "pooled": pooled,
        "reported": reported,
        "canaries": canaries.canaries,
    }


def audit(
    scenario: Scenario, settings: AuditSettings | None = None, scratch: Path | None = None
) -> AuditReport:
    s = settings or AuditSettings()
    got = _bounds(scenario, s, scratch)
    off: dict[str, Any] = {}
    if s.power_check:
        off = _bounds(scenario.without_noise(), s, scratch)
    return AuditReport(
        name=scenario.name,
        reported_epsilon=got["reported"],
        delta=scenario.privacy.delta,
        lower_bound=got["held_out"],
        chosen=got["chosen"],
        lower_bounds=got["bounds"],
        estimates=got["fits"],
        pooled_estimates=got["pooled"],
        settings=s,
        canaries=got["canaries"],
        dp_off_lower_bound=off["held_out"] if off else None,
        dp_off_lower_bounds=off["bounds"] if off else {},
    )
