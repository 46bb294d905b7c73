"""Empirical privacy audit: drive the server's own DP pipeline and lower-bound its epsilon."""

from fleet.audit.audit import AuditReport, AuditSettings, audit
from fleet.audit.presets import PRESETS
from fleet.audit.scenario import Scenario, load_scenario, scenario_from_text

__all__ = [
    "PRESETS",
    "AuditReport",
    "AuditSettings",
    "Scenario",
    "audit",
    "load_scenario",
    "scenario_from_text",
]
