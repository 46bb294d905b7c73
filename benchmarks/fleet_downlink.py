"""Downlink bytes to the target: new versions as quantized deltas vs whole float32 offers.

The fleet benchmark's fleet, data, seeds and FedAvg baseline (benchmarks/fleet.py: 1,000
devices, digits, Dirichlet 0.3, 15% stragglers, concurrency 50, evaluation every 20 virtual
seconds), for FedBuff K=5 and FedAsync with the downlink as whole float32 offers (`none`), int8
deltas and int4 deltas. Devices are pushed every version while connected (fleet/sim/downlink.py);
every run also counts the same pushes as whole float32 offers, so `downlink_reduction_vs_
whole_float32` is the ratio on the same run, and the `none` row of the same strategy says what the
accuracy and time to target were without deltas. Virtual clock: bytes and accuracies do not
depend on the machine's load (recorded anyway).

    .venv/bin/python benchmarks/fleet_downlink.py [--quick]

Writes the `downlink` block of benchmarks/results/fleet.json (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.fleet import EVAL_EVERY_S, KEYS, RESULTS, SERVING_DECAY, _export  # noqa: E402
from fleet.sim.compare import compare  # noqa: E402
from fleet.sim.profiles import FleetConfig  # noqa: E402
from fleet.sim.runner import Experiment, parse_strategy, specs_for  # noqa: E402
from fleet.sim.world import Setup  # noqa: E402

DOWNLINK = (None, {"name": "int8"}, {"name": "int4"})
STRATEGIES = ("fedbuff:5:polynomial", "fedasync:polynomial")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, 30 virtual minutes")
    ap.add_argument("--hours", type=float, default=1.5, help="virtual hours per run")
    ns = ap.parse_args()
    load_start = os.getloadavg()
    seeds = [0] if ns.quick else [0, 1, 2]
    hours = 0.5 if ns.quick else ns.hours
    work = Path(tempfile.mkdtemp(prefix="fleet-downlink-"))
    setup = Setup(devices=1000, alpha=0.3, fleet=FleetConfig(straggler_fraction=0.15),
                  artifacts=_export(work))  # fmt: skip
    exp = Experiment(
        concurrency=50,
        duration_s=hours * 3600,
        eval_every_s=EVAL_EVERY_S,
        serving_decay=SERVING_DECAY,
    )
    specs = [parse_strategy("fedavg"), *specs_for(STRATEGIES, [{"name": "float32"}], DOWNLINK)]
    t0 = time.perf_counter()
    report = compare(specs, exp, setup, seeds, work / "report", progress=print)
    rows: dict[str, Any] = {}
    for label, row in report["aggregate"].items():
        rows[label] = {k: row[k] for k in KEYS}
        rows[label]["per_seed"] = {
            s: {k: report["per_seed"][s]["runs"][label][k] for k in KEYS[:-1]}
            for s in report["per_seed"]
        }
    load_end = os.getloadavg()
    block = {
        "command": "python benchmarks/fleet_downlink.py" + (" --quick" if ns.quick else ""),
        "seeds": seeds,
        "virtual_hours": hours,
        "targets": {s: report["per_seed"][s]["target"] for s in report["per_seed"]},
        "model": f"{report['model']} ({report['num_params']} params)",
        "rows": rows,
        "sim_wall_s": time.perf_counter() - t0,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "note": "virtual clock: bytes, accuracies and virtual times do not depend on the load;"
        " sim_wall_s does (busy machine when the load average is above ~1.5)",
    }
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc["downlink"] = block
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print("\n| run | time->target | down->target | whole f32->target | ratio | final acc |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        ratio = r["downlink_reduction_vs_whole_float32"]
        print(
            f"| {label} | {r['time_to_target_s']} | {r['downlink_bytes_to_target']} |"
            f" {r['downlink_whole_float32_bytes_to_target']} |"
            f" {'-' if ratio is None else f'{ratio:.2f}x'} | {r['final_accuracy']:.4f} |"
        )
    print(f"wrote the downlink block of {RESULTS}; load {load_start} -> {load_end}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
