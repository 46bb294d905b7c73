"""Robustness benchmark: hostile devices vs the server's robust-aggregation defences.

1,000 simulated devices (scikit-learn digits, non-IID Dirichlet alpha 0.3, 15% stragglers, daily
availability, drop-outs), FedBuff K=10 with polynomial staleness, float32 updates through the real
codec and admission path, real ORT training, virtual time. Hostile devices (fleet/attacks.py) are
a fixed share of the fleet; they send what a compromised device could send: sign-flipped (x4),
scaled (x50), random-noise (norm 50x honest), label-flipped, or backdoored (trigger -> class 0,
boosted x5) updates. Defences (server/robust/presets.py): none, norm (adaptive bound + one update
per device, plain mean), trimmed_mean, median, median_norm (median + norm: the first default),
cosine (rows agreeing with the buffer's median, each cut at its staleness weight times the
median delta length, no adaptive bound), default (cosine + norm + one update per device), sign
(the default plus sign agreement: each coordinate moves as far as the kept rows agree on its sign,
server/robust/agreement.py; `sign_agreement = true`).

The committed JSON is the whole matrix from one run of the current code (config.command).
Measured (seed 0, 60 virtual minutes): clean 0.938 without a defence, 0.931 with the default (a
0.6-point cost; goal 1.0); at 20% hostile the undefended fleet falls to 0.22 (sign-flip), 0.11
(scale), 0.79 (noise), and a backdoor succeeds 100%; the default keeps sign-flip, scale, noise and
label-flip within 1.7 points of clean. NOT met by the default: the backdoor goal (10% hostile:
0.616 success, goal within 0.05 of a clean fleet's 0.000; 20%: 0.940). `sign` meets it (0.033;
20%: 0.296) at the costs docs/security.md lists. `--seeds 1,2,3,4` re-runs the rows that decide
those goals on other seeds (seed_rows and seed_summary in the JSON).

    ./run bench robustness            (or .venv/bin/python benchmarks/robustness.py [--quick])

Runs: every defence on a clean fleet; every attack x defence at 20% hostile; every attack with
`none`, `default` and `sign` at 10% hostile. One seed (0), SHORTENED horizon (--minutes,
default 60 virtual minutes, concurrency 50: ~3,000 updates, about 300 FedBuff steps) so the
whole matrix fits a shared 2-core machine; `final_accuracy` is the mean of the last three
evaluations (one per 2 virtual minutes), which damps the async curve's noise. `clean_accuracy`
is the clean fleet WITHOUT a defence; `drop` = clean_accuracy - final_accuracy (positive = worse);
`backdoor_success` = share of triggered test digits of other classes classified as the target
(the no-attack rate is the clean rows' value).

Writes benchmarks/results/robustness.json: {"rows": [...], "config": {...}, "goals": {...}}, each
row with attack, fraction, defence, final_accuracy, clean_accuracy, drop, backdoor_success.

Probe rows (`--rows fresh,flood`, either or both; written under "probe_rows" and "probe_config",
replacing only the probe rows of the kinds run; the matrix above is left as it was measured):

    fresh   a fresh server (the same fleet, the production FedBuff through the server's factory)
            whose first 10 updates are hostile (fleet/attacks.py `fresh-poison`: norm 1e4, one
            direction), then the honest fleet; defences default and none, each against the same
            fleet and defence without the attack: attack "fresh_poison", defence, final_accuracy,
            clean_accuracy, drop, max_step_norm (the longest model step of the run), final_loss,
            clean_loss, first_step_norm (the step the hostile updates made), initial_bound.
    flood   live (benchmarks/robustness_flood.py): real Mosquitto with the production config, the
            real ServerApp, 8 honest devices sending one update per 100 ms in all, with and
            without one device flooding garbage at QoS 0 (target 10,000 messages/s for 10 s) from
            another process: honest_ack_p50_s / p99 / max, flood_messages, flood_rate_per_s
            (achieved), server_alive, acked_updates_lost after a restart, goal_ack_p99_s 1.0.
    Each probe row records os.getloadavg() at its start and end.

Measured (`--rows fresh,flood`, one run on a quiet machine, load average 0.6-0.8): the default
defence keeps a poisoned fresh server at 0.937 (0.931 without the attack; loss 0.21; no step
longer than the warm-up bound 0.98) where no defence ends at 0.175 (loss 2.8e5, a step of 1e4).
During a 9,999 messages/s flood honest Acks took p50 0.68 s, p99 0.96 s, max 0.97 s (108 Acks;
baseline p50 3.4 ms, p99 5.2 ms): the 1 s goal is met by a small margin; an earlier run with
another job on the cores (load 1.7-2.0) gave p99 3.17 s. The server stayed up, read the whole
flood 11.0 s after it began, and lost none of its 210 acknowledged updates.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.attacks import DEVICE_ATTACKS, Attack, AttackKind, backdoor_test_set  # noqa: E402
from fleet.sim.engine import RunResult  # noqa: E402
from fleet.sim.profiles import FleetConfig  # noqa: E402
from fleet.sim.runner import Experiment, parse_strategy, run_in_world  # noqa: E402
from fleet.sim.server_side import SimServer  # noqa: E402
from fleet.sim.world import Setup, load_world, prepare_trainer  # noqa: E402
from server.robust import DEFENCES  # noqa: E402
from server.robust.norm_bound import initial_bound  # noqa: E402

STRATEGY = "fedbuff:10:polynomial"  # server/example.toml's strategy
TARGET = 0  # backdoor target class
KEYS = ("attack", "fraction", "defence", "final_accuracy", "clean_accuracy", "drop",
        "backdoor_success")  # fmt: skip
# the backdoor goal is at 10% hostile (its 20% row is reported); "over clean" = its success minus
# the clean default fleet's (triggered digits the clean model already calls the target)
GOALS = {"max_drop_at_20pct_default": 0.02, "max_backdoor_over_clean_at_10pct": 0.05,
         "max_clean_cost_of_default": 0.01}  # fmt: skip
TEN_PCT_DEFENCES = ("none", "default", "sign")  # sign: the default plus sign agreement, so the
# 10% rows show what it buys
SEED_PLAN = [
    (attack, fraction, defence)
    for defence in ("default", "sign")
    for attack, fraction in (
        ("clean", 0.0),
        ("backdoor", 0.1),
        ("backdoor", 0.2),
        ("sign-flip", 0.2),
        ("label-flip", 0.2),
    )
]
SEED_PLAN.insert(0, ("clean", 0.0, "none"))  # each seed's own clean fleet
FRESH_DEFENCES = ("default", "none")


def _plan(quick: bool) -> list[tuple[str, float, str]]:
    """(attack, fraction, defence) for every run; "clean" = no attackers."""
    defences = ["none", "default"] if quick else list(DEFENCES)
    plan = [("clean", 0.0, d) for d in defences]
    for kind in DEVICE_ATTACKS:
        plan += [(kind.value, 0.2, d) for d in defences]
        if not quick:
            plan += [(kind.value, 0.1, d) for d in TEN_PCT_DEFENCES]
    return plan


_WORKER: dict[str, Any] = {}


def _init_worker(minutes: float, seed: int, artifacts: Path) -> None:
    setup = Setup(devices=1000, alpha=0.3, fleet=FleetConfig(straggler_fraction=0.15),
                  artifacts=artifacts)  # fmt: skip
    trainer, manifest, initial = prepare_trainer(setup, Path(tempfile.mkdtemp()))
    world = load_world(setup, minutes * 60, seed)
    _WORKER.update(trainer=trainer, manifest=manifest, initial=initial, world=world,
                   minutes=minutes, seed=seed,
                   backdoor=backdoor_test_set(world.data[2], world.data[3], TARGET))  # fmt: skip


def _simulate(attack: Attack | None, fraction: float, name: str) -> tuple[RunResult, SimServer]:
    """One run of the worker's world: the production strategy, defence `name`."""
    w = _WORKER
    exp = Experiment(
        concurrency=50,
        duration_s=w["minutes"] * 60,
        eval_every_s=120,
        robust=DEFENCES[name],
        attack=attack,
        attacker_fraction=fraction,
    )
    return run_in_world(
        parse_strategy(STRATEGY),
        exp,
        w["world"],
        manifest=w["manifest"],
        initial=w["initial"],
        trainer=w["trainer"],
        seed=w["seed"],
    )


def _run(job: tuple[str, float, str]) -> dict[str, Any]:
    attack, fraction, name = job
    w = _WORKER
    t0 = time.perf_counter()
    hostile = None if attack == "clean" else Attack(AttackKind(attack), target=TARGET)
    result, server = _simulate(hostile, fraction, name)
    accs = [p.accuracy for p in result.curve]
    row: dict[str, Any] = {
        "attack": attack,
        "fraction": fraction,
        "defence": name,
        "final_accuracy": float(np.mean(accs[-3:])),
        "backdoor_success": w["trainer"].accuracy(server.model, *w["backdoor"]),
        "accepted": result.accepted,
        "rejected": result.rejected,
        "hostile_updates": result.counts.get("hostile_updates", 0),
        "last_accuracy": accs[-1],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(
        f"{attack:>10} {fraction:4.0%} {name:>12}: acc {row['final_accuracy']:.3f}"
        f" backdoor {row['backdoor_success']:.3f} ({row['wall_s']} s)",
        flush=True,
    )
    return row


def _fresh_rows(minutes: float, seed: int, artifacts: Path) -> list[dict[str, Any]]:
    """A fresh server whose first 10 updates are hostile (norm 1e4, one direction), then the
    honest fleet, against the same fleet without the attack; defence default and none."""
    _init_worker(minutes, seed, artifacts)
    w = _WORKER
    x_test, y_test = w["world"].data[2], w["world"].data[3]
    rows = []
    for name in FRESH_DEFENCES:
        load_start = os.getloadavg()
        t0 = time.perf_counter()
        clean, clean_server = _simulate(None, 0.0, name)
        poisoned, server = _simulate(Attack(AttackKind.FRESH_POISON), 0.0, name)
        final = float(np.mean([p.accuracy for p in poisoned.curve][-3:]))
        clean_final = float(np.mean([p.accuracy for p in clean.curve][-3:]))
        rows.append({
            "attack": "fresh_poison",
            "defence": name,
            "final_accuracy": final,
            "clean_accuracy": clean_final,
            "drop": clean_final - final,
            "max_step_norm": server.max_step_norm,
            "final_loss": w["trainer"].loss(server.model, x_test, y_test),
            "clean_loss": w["trainer"].loss(clean_server.model, x_test, y_test),
            "clean_max_step_norm": clean_server.max_step_norm,
            "first_step_norm": server.step_norms[0] if server.step_norms else None,
            "initial_bound": initial_bound(w["initial"]),
            "min_accuracy_after_start": min(p.accuracy for p in poisoned.curve[1:]),
            "hostile_updates": poisoned.counts.get("hostile_updates", 0),
            "accepted": poisoned.accepted,
            "rejected": poisoned.rejected,
            "wall_s": round(time.perf_counter() - t0, 1),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        })  # fmt: skip
        print(
            f"fresh_poison {name:>8}: acc {final:.3f} (clean {clean_final:.3f}), max step"
            f" {server.max_step_norm:.4g}, loss {rows[-1]['final_loss']:.4g}",
            flush=True,
        )
    return rows


def _probe(ns: argparse.Namespace, artifacts: Path) -> int:
    """--rows: run only the named probe rows and keep them under "probe_rows" in --out."""
    kinds = set(ns.rows.split(","))
    if not kinds <= {"fresh", "flood"}:
        raise SystemExit(f"--rows {ns.rows}: choose from fresh, flood")
    rows: list[dict[str, Any]] = []
    if "fresh" in kinds:
        rows += _fresh_rows(ns.minutes, ns.seed, artifacts)
    if "flood" in kinds:
        from benchmarks.robustness_flood import flood_rows

        rows += flood_rows(ns.flood_rate, ns.flood_seconds)
    doc = json.loads(ns.out.read_text()) if ns.out.exists() else {}
    replaced = {r["attack"] for r in rows}
    kept = [r for r in doc.get("probe_rows", []) if r["attack"] not in replaced]
    doc["probe_rows"] = kept + rows
    config = doc.setdefault("probe_config", {})
    command = "python benchmarks/robustness.py " + " ".join(sys.argv[1:])
    machine = f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"
    for kind in kinds:
        config[kind] = {"command": command, "machine": machine}
    if "fresh" in kinds:
        config["fresh"] |= {
            "devices": 1000,
            "strategy": STRATEGY,
            "virtual_minutes": ns.minutes,
            "seed": ns.seed,
            "hostile": "the first 10 updates a fresh server receives, norm 1e4, one direction",
        }
    if "flood" in kinds:
        config["flood"] |= {"rate_target_per_s": ns.flood_rate, "seconds": ns.flood_seconds}
    ns.out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        print(json.dumps(r))
    print(f"wrote probe_rows of {ns.out}")
    return 0


def _seed_rows(ns: argparse.Namespace, artifacts: Path) -> int:
    """--seeds: SEED_PLAN's rows on other seeds (world, partition, fleet and run), each seed
    against its own clean fleet; kept under "seed_rows" / "seed_summary" in --out."""
    seeds = [int(x) for x in ns.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    for seed in seeds:
        with multiprocessing.get_context("spawn").Pool(
            ns.jobs, _init_worker, (ns.minutes, seed, artifacts)
        ) as pool:
            these = pool.map(_run, SEED_PLAN, chunksize=1)
        clean = next(r for r in these if r["attack"] == "clean" and r["defence"] == "none")
        for r in these:
            r["seed"] = seed
            r["clean_accuracy"] = clean["final_accuracy"]
            r["drop"] = clean["final_accuracy"] - r["final_accuracy"]
        rows += these
    summary: dict[str, Any] = {}
    for seed in seeds:
        verdict = _verdict([r for r in rows if r["seed"] == seed])
        summary[str(seed)] = verdict
    verdicts = list(summary.values())
    for name in ("default", "sign"):
        costs = [v[f"clean_cost_of_{name}"] for v in verdicts]
        backdoors = [v[f"backdoor_over_clean_at_10pct_{name}"] for v in verdicts]
        summary[f"mean_clean_cost_of_{name}"] = float(np.mean(costs))
        summary[f"max_clean_cost_of_{name}"] = float(np.max(costs))
        summary[f"mean_backdoor_over_clean_at_10pct_{name}"] = float(np.mean(backdoors))
        summary[f"max_backdoor_over_clean_at_10pct_{name}"] = float(np.max(backdoors))
    doc = json.loads(ns.out.read_text()) if ns.out.exists() else {}
    doc["seed_rows"] = rows
    doc["seed_summary"] = summary
    doc["seed_config"] = {
        "command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]),
        "seeds": seeds,
        "virtual_minutes": ns.minutes,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "note": "accuracies and backdoor rates do not depend on the machine's load (virtual"
        " clock); wall_s does",
    }
    ns.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote seed_rows of {ns.out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20%% attackers, none/default only")
    ap.add_argument("--minutes", type=float, default=60.0, help="virtual minutes per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--artifacts", type=Path, help="exported mlp (default: export it)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/robustness.json")
    ap.add_argument(
        "--rerun",
        help="comma-separated defences: run only their rows and replace them in --out (e.g."
        " after changing the default); the other rows are kept as they were measured",
    )
    ap.add_argument(
        "--rows",
        help="comma-separated probe rows to run instead of the matrix (kept under probe_rows):"
        " fresh (a fresh server's first 10 updates hostile), flood (live Mosquitto)",
    )
    ap.add_argument(
        "--seeds",
        help="comma-separated seeds: run the held-out rows (clean, backdoor at 10%% and 20%%,"
        " sign-flip and label-flip at 20%%) on each instead of the matrix (kept under seed_rows)",
    )
    ap.add_argument("--flood-rate", type=float, default=10_000.0, help="target messages/s")
    ap.add_argument("--flood-seconds", type=float, default=10.0)
    ns = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="robustness-bench-"))
    artifacts = ns.artifacts
    needs_model = ns.rows is None or "fresh" in ns.rows.split(",") or ns.seeds is not None
    if artifacts is None and needs_model:  # export once, before the workers start
        prepare_trainer(Setup(), work)
        artifacts = work / "artifacts"
    if ns.rows:
        return _probe(ns, artifacts)
    if ns.seeds:
        return _seed_rows(ns, artifacts)
    t_all = time.perf_counter()
    plan = _plan(ns.quick)
    kept: list[dict[str, Any]] = []
    if ns.rerun:
        names = set(ns.rerun.split(","))
        plan = [job for job in plan if job[2] in names]
        old_doc = json.loads(ns.out.read_text())
        kept = [r for r in old_doc["rows"] if r["defence"] not in names]
    init = (ns.minutes, ns.seed, artifacts)
    if ns.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(ns.jobs, _init_worker, init) as pool:
            rows = pool.map(_run, plan, chunksize=1)
    else:
        _init_worker(*init)
        rows = [_run(job) for job in plan]
    order = {job: i for i, job in enumerate(_plan(ns.quick))}
    rows = sorted(
        kept + rows,
        key=lambda r: order.get((r["attack"], r["fraction"], r["defence"]), len(order)),
    )
    clean = next(r["final_accuracy"] for r in rows if r["attack"] == "clean" and
                 r["defence"] == "none")  # fmt: skip
    for r in rows:
        r["clean_accuracy"] = clean
        r["drop"] = clean - r["final_accuracy"]
    rows = [{k: r[k] for k in KEYS} | {k: v for k, v in r.items() if k not in KEYS} for r in rows]
    manifest = _WORKER.get("manifest") or prepare_trainer(Setup(artifacts=artifacts), work)[1]
    doc: dict[str, Any] = {
        "rows": rows,
        "goals": GOALS,
        "verdict": _verdict(rows),
        "config": {
            "command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]),
            "devices": 1000,
            "strategy": STRATEGY,
            "codec": "float32",
            "alpha": 0.3,
            "seed": ns.seed,
            "virtual_minutes": ns.minutes,
            "concurrency": 50,
            "final_accuracy": "mean of the last 3 evaluations (every 2 virtual minutes)",
            "clean_accuracy": "clean fleet, no defence, same seed and horizon",
            "defences": {k: (v.label if v else "none") for k, v in DEFENCES.items()},
            "attacks": {k.value: Attack(k).factor for k in DEVICE_ATTACKS},
            "backdoor": "2x2 bright corner patch -> class 0; hostile batches = clean + triggered",
            "machine": "shared 2-core x86_64, loaded by other jobs (wall times vary 2x)",
            "model": f"{manifest.model_name} ({manifest.num_params} params)",
        },
        "total_wall_s": round(time.perf_counter() - t_all, 1),
    }
    if ns.rerun:  # say which rows are newer than the rest
        doc["config"]["command"] = old_doc["config"]["command"]
        this = {
            "command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]),
            "defences": sorted(names),
            "wall_s": doc["total_wall_s"],
        }
        # every re-run so far, oldest first: the rows of the defences named last are the newest
        before = old_doc["config"].get("reruns") or [old_doc["config"].get("rerun")]
        doc["config"]["reruns"] = [r for r in before if r] + [this]
        doc["total_wall_s"] = old_doc["total_wall_s"]
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(doc, indent=1) + "\n")
    _table(rows)
    print(json.dumps(doc["verdict"], indent=1))
    print(f"wrote {ns.out} ({doc['total_wall_s']} s)")
    return 0


def _verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(attack: str, fraction: float, defence: str) -> dict[str, Any] | None:
        return next(
            (r for r in rows if (r["attack"], r["fraction"], r["defence"]) ==
             (attack, fraction, defence)),
            None,
        )  # fmt: skip

    out: dict[str, Any] = {}
    clean_def = pick("clean", 0.0, "default")
    clean_none = pick("clean", 0.0, "none")
    if clean_def and clean_none:
        out["clean_cost_of_default"] = clean_none["final_accuracy"] - clean_def["final_accuracy"]
        bd_base = clean_def["backdoor_success"]
        drops = {}
        for kind in DEVICE_ATTACKS:
            r = pick(kind.value, 0.2, "default")
            if r:
                drops[kind.value] = r["drop"]
        out["drop_at_20pct_default"] = drops
        for fraction in (0.1, 0.2):
            for name in ("default", "sign"):
                bd = pick(AttackKind.BACKDOOR.value, fraction, name)
                if bd:
                    key = f"backdoor_over_clean_at_{fraction:.0%}_{name}".replace("%", "pct")
                    out[key] = bd["backdoor_success"] - bd_base
        sign = pick("clean", 0.0, "sign")
        if sign:
            out["clean_cost_of_sign"] = clean_none["final_accuracy"] - sign["final_accuracy"]
        out["all_goals_met"] = bool(
            out["clean_cost_of_default"] <= GOALS["max_clean_cost_of_default"]
            and all(d <= GOALS["max_drop_at_20pct_default"] for d in drops.values())
            and out.get("backdoor_over_clean_at_10pct_default", 1.0)
            <= GOALS["max_backdoor_over_clean_at_10pct"]
        )
    return out


def _table(rows: list[dict[str, Any]]) -> None:
    print("\n| attack | hostile | defence | final acc | drop | backdoor |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['attack']} | {r['fraction']:.0%} | {r['defence']} | {r['final_accuracy']:.3f}"
            f" | {r['drop']:+.3f} | {r['backdoor_success']:.3f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
