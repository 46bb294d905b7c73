"""`fleetlearn audit privacy`: lower-bound the epsilon of a server configuration empirically.

    fleetlearn audit privacy --config server.toml           the [privacy] of your own server
    fleetlearn audit privacy --preset fixed-clip ...        built-in configurations (presets.py)

Prints one line per configuration and writes JSON with --out. Exit status 1 when an audited lower
bound exceeds the reported epsilon (the reported epsilon is then wrong), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from fleet.audit.audit import AuditReport, AuditSettings, audit
from fleet.audit.presets import PRESETS
from fleet.audit.scenario import Scenario, load_scenario, scenario_from_text
from protocol.errors import ConfigError

__all__ = ["add_arguments", "run", "summary_line"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit", required=True, metavar="WHAT")
    p = sub.add_parser("privacy", help="empirical epsilon lower bounds for a DP configuration")
    a = p.add_argument
    a("--config", type=Path, action="append", default=[], help="a server.toml with [privacy]")
    a("--preset", action="append", default=[], choices=sorted(PRESETS), help="built-in config")
    d = AuditSettings()
    a("--releases", type=int, default=d.releases, help="published models per trial")
    a("--trials", type=int, default=d.trials, help="two-world trials per world")
    a("--canaries", type=int, default=d.canaries, help="canaries inserted per run")
    a("--canary-runs", type=int, default=d.canary_runs, help="runs whose canary scores pool")
    a("--params", type=int, default=1024, help="size of the synthetic model (default 1024)")
    a("--seed", type=int, default=d.seed, help="derives every trial's noise key and updates")
    a("--no-power-check", action="store_true", help="skip the audit without noise")
    a("--out", type=Path, help="write the reports as JSON")


def summary_line(report: AuditReport) -> str:
    off = report.dp_off_lower_bound
    verdict = "ok" if report.consistent else "REPORTED EPSILON TOO LOW"
    power = "" if off is None else f"  no-noise bound {off:.2f}"
    return (
        f"{report.name:<22} reported eps {report.reported_epsilon:.3f} (delta {report.delta:g})  "
        f"audited lower bound {report.lower_bound:.3f} ({report.chosen}){power}  {verdict}"
    )


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    found = [load_scenario(path, args.params) for path in args.config]
    found += [scenario_from_text(name, PRESETS[name], args.params) for name in args.preset]
    if not found:
        raise ConfigError("audit privacy: give --config server.toml or --preset NAME")
    return found


def run(args: argparse.Namespace) -> int:
    settings = AuditSettings(
        releases=args.releases,
        trials=args.trials,
        canaries=args.canaries,
        canary_runs=args.canary_runs,
        seed=args.seed,
        power_check=not args.no_power_check,
    )
    if not getattr(args, "verbose", False):  # every trial starts a server: keep its log quiet
        logging.getLogger("server").setLevel(logging.WARNING)
    reports = []
    for scenario in _scenarios(args):
        report = audit(scenario, settings)
        print(summary_line(report), flush=True)
        reports.append(report)
    if args.out is not None:
        rows = [r.to_json() for r in reports]
        args.out.write_text(json.dumps(rows, indent=2, default=_finite) + "\n")
    return 0 if all(r.consistent for r in reports) else 1


def _finite(value: object) -> object:
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value
