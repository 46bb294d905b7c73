"""Empirical privacy audit of the server's DP configurations (fleet/audit): for each preset, the
epsilon the server reports next to the lower bound that two-world tests and one-shot canaries
prove, and the bound the same audit proves without noise (its power).

    .venv/bin/python benchmarks/privacy_audit.py [--trials 150] [--canary-runs 25] [--quick]

Writes benchmarks/results/privacy_audit.json: per configuration `reported_epsilon`, `delta`,
`audited_epsilon_lower_bound` (held out, 95%), `method`, `canaries`, `releases`, `trials`,
`dp_off_lower_bound`, the Gaussian-fit estimates (Andrew et al. 2024) and the command that ran.
It measures epsilon, not time: machine load does not change the numbers (the seed fixes them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.audit import PRESETS, AuditSettings, audit, scenario_from_text  # noqa: E402
from fleet.audit.cli import summary_line  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=150, help="two-world trials per world")
    p.add_argument("--canary-runs", type=int, default=25)
    p.add_argument("--canaries", type=int, default=4)
    p.add_argument("--releases", type=int, default=4)
    p.add_argument("--params", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--quick", action="store_true", help="30 trials, 5 canary runs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/privacy_audit.json")
    args = p.parse_args()
    if args.quick:
        args.trials, args.canary_runs = 30, 5
    logging.getLogger("server").setLevel(logging.WARNING)
    settings = AuditSettings(
        releases=args.releases,
        trials=args.trials,
        canaries=args.canaries,
        canary_runs=args.canary_runs,
        seed=args.seed,
    )
    command = "python benchmarks/privacy_audit.py " + " ".join(sys.argv[1:])
    rows = []
    for name in args.presets.split(","):
        t0 = time.perf_counter()
        report = audit(scenario_from_text(name, PRESETS[name], args.params), settings)
        print(summary_line(report), flush=True)
        row = report.to_json() | {"params": args.params, "wall_s": time.perf_counter() - t0}
        rows.append(row)
    doc = {"command": command.strip(), "configurations": rows}
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if all(r["consistent"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
