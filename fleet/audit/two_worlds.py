"""Two-world tests: many trials of two adjacent runs, a target device present or zeroed out.

    present: the target sends s_v * 2C * u in release v (s_v = (-1)^v; the server clips it to C)
    absent:  the target sends a zero update (the "zero-out" neighbour the mechanism is accounted
             for: who arrives when does not depend on the data)
    both:    K - 1 honest devices per release, a fresh noise key and fresh honest updates per trial

Scores use every published model (attacks.py): the signed sum of projections on u (optimal when
each release's noise is independent), the same over residuals (what an observer does when a
release's noise repeats an earlier one: alternating signs keep the target in the difference of
consecutive releases while a repeated noise cancels), and, when the clip norm adapts, how far the
published clip norm moved (the target, clipped, is not counted as unclipped; a zero update is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.audit.attacks import signed_projection
from fleet.audit.canaries import contribution_norm
from fleet.audit.population import honest_updates, unit_directions
from fleet.audit.releases import run_trial
from fleet.audit.scenario import Scenario, trial_seed

__all__ = ["TARGET", "WorldScores", "run_two_worlds"]

TARGET = "audit-target"
OVERSHOOT = 2.0  # the target sends twice the clip norm: clipped to C, and counted as clipped


@dataclass(frozen=True)
class WorldScores:
    absent: dict[str, np.ndarray]  # statistic -> (trials,) scores
    present: dict[str, np.ndarray]
    trials: int  # per world
    reported_epsilon: float
    delta: float


@dataclass(frozen=True)
class _TargetPlan:
    """Release v: the target sends weights[v] * 2C * u (zeros: absent), then K - 1 honest."""

    scenario: Scenario
    direction: np.ndarray  # (n,) unit
    weights: np.ndarray  # (R,) the signs, or zeros in the absent world
    rng: np.random.Generator

    def __call__(self, release: int, clip: float) -> list[tuple[str, np.ndarray]]:
        norm = contribution_norm(self.scenario, clip)
        target = (self.direction * (self.weights[release] * OVERSHOOT * norm)).astype(np.float32)
        count = self.scenario.per_release - 1
        honest = honest_updates(self.rng, count, self.scenario.params, norm)
        return [(TARGET, target)] + [(f"honest-{release}-{i}", r) for i, r in enumerate(honest)]


def run_two_worlds(
    scenario: Scenario,
    *,
    releases: int,
    trials: int,
    seed: int = 0,
    scratch: Path | None = None,
) -> WorldScores:
    if scenario.per_release < 2:
        raise ValueError("two-world tests need at least 2 updates per release")
    manifest = scenario.manifest()
    signs = np.array([(-1.0) ** v for v in range(releases)])  # (R,)
    scores: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    reported = 0.0
    for present in (False, True):
        for t in range(trials):
            key = trial_seed(seed, scenario.name, "two-worlds", present, t)
            rng = np.random.default_rng(key)
            u = unit_directions(rng, 1, scenario.params)[0]  # (n,)

            plan = _TargetPlan(scenario, u, signs if present else np.zeros_like(signs), rng)
            trial = run_trial(scenario, key, plan, releases, manifest, scratch)
            reported = max(reported, trial.reported_epsilon)
            row = signed_projection(trial.models, u, signs)
            if scenario.privacy.adaptive_clip:
                row["clip"] = math.log(float(trial.clips[-1]) / float(trial.clips[0]))
            for name, value in row.items():
                scores[present].setdefault(name, []).append(value)
    return WorldScores(
        {k: np.asarray(v) for k, v in scores[False].items()},
        {k: np.asarray(v) for k, v in scores[True].items()},
        trials,
        reported,
        scenario.privacy.delta,
    )
