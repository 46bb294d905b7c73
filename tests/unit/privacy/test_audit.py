"""A CI-sized privacy audit of the server's own DP pipeline, and proof that the audit can fail:
it finds a large bound without noise and catches a mechanism that reuses noise across releases,
while a mechanism with independent noise per release passes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fleet.audit import PRESETS, AuditSettings, audit, scenario_from_text
from fleet.audit.audit import AuditReport
from fleet.audit.releases import run_trial
from server.privacy import mechanism
from server.privacy.noise import NoiseDomain

# 2 x 100 two-world trials and 25 canary runs of 4 releases: about 4 s per audit on 2 cores
CI = AuditSettings(releases=4, trials=100, canaries=4, canary_runs=25, power_check=False)
PARAMS = 1024
real_gaussian = mechanism.gaussian


def _audit(preset: str = "fixed-clip", *, no_noise: bool = False) -> AuditReport:
    scenario = scenario_from_text(preset, PRESETS[preset], PARAMS)
    return audit(scenario.without_noise() if no_noise else scenario, CI)


def _independent(key: bytes, domain: NoiseDomain, version: int, n: int, std: float) -> np.ndarray:
    """Noise from a stream of its own per (key, domain, version): what a correct mechanism does."""
    seed = hashlib.sha256(key + int(domain).to_bytes(8, "big") + version.to_bytes(8, "big"))
    return np.random.default_rng(int.from_bytes(seed.digest(), "big")).standard_normal(n) * std


def _reused(key: bytes, domain: NoiseDomain, version: int, n: int, std: float) -> np.ndarray:
    """A broken mechanism: every release gets the first release's noise."""
    return real_gaussian(key, domain, 0, n, std)


def test_the_servers_mechanism_passes_its_audit() -> None:
    report = _audit()
    assert report.reported_epsilon == pytest.approx(1.6937, abs=1e-3)  # sigma 5, 4 releases
    assert report.lower_bound <= report.reported_epsilon, (
        f"audited lower bound {report.lower_bound:.3f} ({report.chosen}) exceeds the reported "
        f"epsilon {report.reported_epsilon:.3f}: the published models leak more than reported"
    )


def test_without_noise_the_audit_finds_a_large_bound() -> None:
    report = _audit(no_noise=True)
    # 50 held-out trials per world: the largest provable bound is log(0.929 / 0.0711) = 2.57
    assert report.lower_bound > 2.4
    assert report.lower_bounds["two_worlds/sum"] > 3.0


def test_the_audit_catches_noise_reused_across_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mechanism, "gaussian", _reused)
    report = _audit()
    # the target's alternating signs cancel a repeated noise in the signed sum as well
    assert report.lower_bound > report.reported_epsilon + 0.5
    assert report.chosen.startswith("two_worlds/") or report.chosen.endswith("residuals")


def test_independent_noise_per_release_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mechanism, "gaussian", _independent)
    for preset in ("fixed-clip", "adaptive-clip"):
        report = _audit(preset)
        assert report.lower_bound <= report.reported_epsilon, report.to_json()
        assert max(report.lower_bounds.values()) < report.reported_epsilon


def test_secure_aggregation_releases_run_through_the_cohort_runner() -> None:
    scenario = scenario_from_text("secure", PRESETS["secure-aggregation"], 64)
    rng = np.random.default_rng(0)

    def plan(release: int, clip: float) -> list[tuple[str, np.ndarray]]:
        return [(f"d{i}", rng.standard_normal(64).astype(np.float32)) for i in range(8)]

    trial = run_trial(scenario, 1, plan, 2)
    assert trial.models.shape == (3, 64)
    assert np.all(np.linalg.norm(np.diff(trial.models, axis=0), axis=1) > 0)
    assert trial.reported_epsilon > 0
