"""Differential privacy on a 5,000-device simulated fleet: FedBuff vs synchronous DP-FedAvg.

For epsilon in {1, 2, 4, 8, inf} at delta = 1 / devices, both strategies run on the same fleet,
data and seed (real ORT training, virtual time, the production strategy and DP mechanism objects):
    fedbuff  K = BUFFER, polynomial staleness, user-level DP (clip C, noise on the buffer's sum)
    fedavg   round size K (cohort + 30% over-selection, deadline): DP-FedAvg, the same mechanism
sigma is calibrated with dp-accounting so that PLANNED flushes spend epsilon (no amplification by
sampling is claimed: devices are not sampled at random); the server refuses the flush after that
and keeps serving the last model. epsilon = inf is the same run without clipping or noise.

    .venv/bin/python benchmarks/privacy.py [--devices 5000] [--quick]

Writes benchmarks/results/privacy.json: per (strategy, epsilon) rows with `epsilon`, `delta`,
`noise_multiplier`, `final_accuracy`, `accuracy_drop_vs_nonprivate`, `time_to_target_s`, plus the
epsilon actually spent, the noised flushes and the wall cost.

What it measured (results/privacy.json: 5,000 devices sharing 44 Dirichlet(0.3) slices of digits,
MLP 9,610 parameters, K = 1,000, C = 2.5, 64 samples x 2 local epochs (AdamW), PLD accountant, 10
planned flushes, delta = 2e-4, one seed, 0.35 virtual hours; 5 minutes wall, load average in the
JSON):
    FedBuff        eps 1: 0.864   2: 0.869   4: 0.866   8: 0.864   inf: 0.847  (9 steps each)
    DP-FedAvg      eps 1: 0.797   2: 0.819   4: 0.822   8: 0.816   inf: 0.833  (6 rounds in time)
At epsilon 8 FedBuff ends 1.7 points above its non-private run (goal: within 3 points, met on this
seed) and sync DP-FedAvg 1.7 points below. Noise hardly matters at this scale (sigma 9.5 at eps 1
gives per-coordinate noise sigma*C/K = 0.024 on the mean): clipping and the number of steps decide,
and differences under ~1 point are a few of the 360 test images and this seed's noise draw. The
virtual duration holds 9 of the 10 planned flushes, so epsilon spent is 7.47 of 8. What does
matter is the number of flushes the budget is planned for: with 5 planned flushes
(results/privacy_planned5.json, an older simulator) every epsilon stopped at 0.81 (FedBuff) / 0.88
(FedAvg) because training ran out of steps, not because of noise.
Not measured: several seeds, adaptive clipping
(with 10 flushes its geometric update barely moves C), other models or data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.sim.profiles import Availability, FleetConfig  # noqa: E402
from fleet.sim.report import reached  # noqa: E402
from fleet.sim.runner import Experiment, parse_strategy, run_in_world  # noqa: E402
from fleet.sim.training import LocalBudget  # noqa: E402
from fleet.sim.world import Setup, load_world, prepare_trainer  # noqa: E402
from server.privacy import PrivacyConfig, calibrate_noise_multiplier  # noqa: E402
from server.privacy.accountant import Method  # noqa: E402

EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)
ROW_KEYS = (
    "epsilon",
    "delta",
    "noise_multiplier",
    "final_accuracy",
    "accuracy_drop_vs_nonprivate",
    "time_to_target_s",
)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--devices", type=int, default=5000)
    a("--buffer", type=int, default=1000, help="FedBuff K and the FedAvg round size")
    a("--planned", type=int, default=10, help="noised flushes the budget is calibrated for")
    a("--clip", type=float, default=2.5, help="clip norm C (initial C when adaptive)")
    a("--adaptive", action="store_true", help="adaptive clipping (Andrew et al.)")
    a("--server-lr", type=float, default=1.0)
    a("--accountant", choices=("rdp", "pld"), default="pld")
    a("--hours", type=float, default=0.35, help="virtual duration")
    a("--eval-every", type=float, default=60.0, help="virtual seconds between evaluations")
    a("--target", type=float, default=0.8, help="target accuracy for time_to_target_s")
    a("--local-samples", type=int, default=64)
    a("--epochs", type=int, default=2)
    a("--deadline", type=float, default=400.0, help="sync round deadline, virtual seconds")
    a("--alpha", type=float, default=0.3, help="Dirichlet non-IID alpha")
    a("--seed", type=int, default=0)
    a("--epsilons", default=",".join(str(e) for e in EPSILONS))
    a("--strategies", default="fedbuff,fedavg")
    a("--out", type=Path, default=ROOT / "benchmarks" / "results" / "privacy.json")
    return p.parse_args()


def _privacy(args: argparse.Namespace, eps: float, delta: float) -> PrivacyConfig | None:
    if math.isinf(eps):
        return None
    method = Method(args.accountant)
    sigma = calibrate_noise_multiplier(eps, delta, args.planned, method)
    return PrivacyConfig(
        epsilon=eps,
        delta=delta,
        noise_multiplier=sigma,
        clip_norm=args.clip,
        adaptive_clip=args.adaptive,
        accountant=method,
        seed=args.seed,  # a public seed: reproducible benchmark noise, not a private deployment
    )


def main() -> int:
    args = _args()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    delta = 1.0 / args.devices
    fleet = FleetConfig(availability=Availability.ALWAYS, straggler_fraction=0.15)
    setup = Setup(devices=args.devices, alpha=args.alpha, fleet=fleet)
    base_exp = Experiment(
        concurrency=args.buffer,  # async: K training at once; sync: replaced below
        fedbuff_lr=args.server_lr,
        deadline_s=args.deadline,
        duration_s=args.hours * 3600,
        eval_every_s=args.eval_every,
        budget=LocalBudget(max_samples=args.local_samples, epochs=args.epochs, batch_size=8),
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        world = load_world(setup, base_exp.duration_s, args.seed)
        trainer, manifest, initial = prepare_trainer(setup, Path(tmp))
        for name in args.strategies.split(","):
            text = f"fedbuff:{args.buffer}:polynomial" if name == "fedbuff" else name
            spec = parse_strategy(text)
            exp = base_exp
            if name == "fedavg":  # the round size is K: select K plus 30% over-selection
                exp = replace(exp, concurrency=math.ceil(args.buffer * (1 + exp.over_selection)))
            for eps in epsilons:
                privacy = _privacy(args, eps, delta)
                result, server = run_in_world(
                    spec,
                    replace(exp, privacy=privacy),
                    world,
                    manifest=manifest,
                    initial=initial,
                    trainer=trainer,
                    seed=args.seed,
                )
                got = reached(result, args.target)
                row = {
                    "strategy": name,
                    "epsilon": None if math.isinf(eps) else eps,
                    "delta": delta,
                    "noise_multiplier": None if privacy is None else privacy.noise_multiplier,
                    "final_accuracy": result.final_accuracy,
                    "best_accuracy": max(p.accuracy for p in result.curve),
                    "time_to_target_s": got.time_s,
                    "epsilon_spent": None if result.privacy is None else result.privacy["epsilon"],
                    "noised_steps": None if result.privacy is None else result.privacy["flushes"],
                    "clip_norm_final": None
                    if result.privacy is None
                    else result.privacy["clip_norm"],
                    "server_steps": result.curve[-1].version,
                    "updates_accepted": result.accepted,
                    "rejected": result.rejected,
                    "sim_wall_s": round(result.wall_s, 1),
                }
                rows.append(row)
                print(
                    f"{name:8s} eps {eps:>4} sigma {row['noise_multiplier'] or 0:6.2f} "
                    f"acc {result.final_accuracy:.3f} (best {row['best_accuracy']:.3f}) "
                    f"steps {row['server_steps']} spent {row['epsilon_spent']} "
                    f"t->target {got.time_s} wall {result.wall_s:.0f}s",
                    flush=True,
                )
                del server
    for name in args.strategies.split(","):
        base = next((r for r in rows if r["strategy"] == name and r["epsilon"] is None), None)
        for r in rows:
            if r["strategy"] == name:
                r["accuracy_drop_vs_nonprivate"] = (
                    None if base is None else base["final_accuracy"] - r["final_accuracy"]
                )
    doc = {
        "devices": args.devices,
        "distinct_data_slices": world.distinct_slices,
        "model": manifest.model_name,
        "num_params": manifest.num_params,
        "buffer_size_K": args.buffer,
        "planned_flushes": args.planned,
        "clip_norm": args.clip,
        "adaptive_clip": args.adaptive,
        "server_lr": args.server_lr,
        "local_samples": args.local_samples,
        "local_epochs": args.epochs,
        "accountant": args.accountant,
        "sampling_amplification": False,
        "neighbouring": "zero-out: one device's contributions replaced by zeros (user-level)",
        "target_accuracy": args.target,
        "virtual_hours": args.hours,
        "seed": args.seed,
        "row_keys": list(ROW_KEYS),
        "rows": rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": "shared 2-core x86_64 VM",
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out} in {doc['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
