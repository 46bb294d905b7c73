"""One-shot canaries (Andrew et al. 2024, "One-shot Empirical Privacy Estimation for Federated
Learning", arXiv 2302.03098).

In each run, k canary devices send C * u_j (u_j a fixed random unit direction, C the clip norm
the offer carries) in every release, among K - k honest devices; k more directions are drawn and
never sent. After the run, each direction's cosine with the published changes is a score: the
inserted directions' scores against the never-inserted ones' give a Gaussian-fit estimate of
epsilon and a Clopper-Pearson lower bound. Scores from several runs (fresh noise keys) pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.audit.attacks import cosines
from fleet.audit.population import honest_updates, unit_directions
from fleet.audit.releases import run_trial
from fleet.audit.scenario import Scenario, trial_seed

__all__ = ["CanaryScores", "contribution_norm", "run_canaries"]


@dataclass(frozen=True)
class CanaryScores:
    absent: dict[str, np.ndarray]  # statistic -> (runs * k,) scores of never-inserted directions
    present: dict[str, np.ndarray]  # statistic -> (runs * k,) scores of inserted canaries
    canaries: int  # inserted, over all runs
    runs: int
    reported_epsilon: float
    delta: float


def contribution_norm(scenario: Scenario, clip: float) -> float:
    """The largest norm a device's update may have when the offer carries clip norm `clip`."""
    return scenario.member_clip * clip / scenario.privacy.clip_norm


@dataclass(frozen=True)
class _CanaryPlan:
    """Release v: every canary sends C_v * u_j, then K - k honest updates."""

    scenario: Scenario
    inserted: np.ndarray  # (k, n) unit rows
    rng: np.random.Generator

    def __call__(self, release: int, clip: float) -> list[tuple[str, np.ndarray]]:
        norm = contribution_norm(self.scenario, clip)
        at_bound = norm * (1.0 - 1e-6)  # at the clip norm, never over it after rounding
        sent = [
            (f"canary-{j}", (u * at_bound).astype(np.float32)) for j, u in enumerate(self.inserted)
        ]
        count = self.scenario.per_release - len(sent)
        honest = honest_updates(self.rng, count, self.scenario.params, norm)
        return sent + [(f"honest-{release}-{i}", row) for i, row in enumerate(honest)]


def run_canaries(
    scenario: Scenario,
    *,
    releases: int,
    canaries: int,
    runs: int = 1,
    seed: int = 0,
    scratch: Path | None = None,
) -> CanaryScores:
    k, per_release, n = canaries, scenario.per_release, scenario.params
    if not 1 <= k < per_release:
        raise ValueError(f"need 1 <= canaries < {per_release} (updates per release), got {k}")
    manifest = scenario.manifest()
    absent: dict[str, list[np.ndarray]] = {}
    present: dict[str, list[np.ndarray]] = {}
    reported, delta = 0.0, scenario.privacy.delta
    for run in range(runs):
        key = trial_seed(seed, scenario.name, "canaries", run)
        rng = np.random.default_rng(key)
        directions = unit_directions(rng, 2 * k, n)  # (2k, n): first k inserted

        plan = _CanaryPlan(scenario, directions[:k], rng)
        trial = run_trial(scenario, key, plan, releases, manifest, scratch)
        reported = max(reported, trial.reported_epsilon)
        for name, scores in cosines(trial.models, directions).items():
            present.setdefault(name, []).append(scores[:k])
            absent.setdefault(name, []).append(scores[k:])
    return CanaryScores(
        {name: np.concatenate(parts) for name, parts in absent.items()},
        {name: np.concatenate(parts) for name, parts in present.items()},
        k * runs,
        runs,
        reported,
        delta,
    )
