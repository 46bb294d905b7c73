"""Fleet-scale benchmark: async staleness-weighted aggregation (+ compression) vs sync FedAvg.

1,000 simulated devices, scikit-learn digits split non-IID (Dirichlet alpha 0.3), 15% stragglers
10x slower, lognormal speeds and bandwidths, daily availability, 5% mid-session drop-outs, three
seeds. Real ORT training, virtual time. Compares, on identical fleets/data/seeds:
    fedavg (sync, over-selection 30%, deadline)       float32           <- the baseline
    fedasync (polynomial staleness)                   float32 and BEST_CODEC
    fedbuff K=5 (polynomial staleness)                float32 and BEST_CODEC
Time to target and uplink bytes to target (target: 95% of sync FedAvg's final accuracy per seed)
as ratios to FedAvg; then how the simulator's wall cost scales with the fleet.

    /work/main/.venv/bin/python benchmarks/fleet.py [--quick] [--no-scaling]

Writes benchmarks/results/fleet.json (and the full report with curves and plots under
benchmarks/results/fleet/). Every row also reports the model bytes pushed to devices until the
target (downlink_bytes_to_target) beside the same pushes as whole float32 offers; these rows send
whole offers (ratio 1.0). Deltas between versions: benchmarks/fleet_downlink.py, which writes the
`downlink` block of the same file (kept by this script).

What it measured (results/fleet.json, 3 seeds, --no-scaling so the scaling block is an earlier
run's; re-run by the integrator on main after merging issue 16's two branches, i.e. with
fleet/partition.py's fix that no device gets an empty or near-empty slice -- this fleet's smallest
slice went from 5 to 32 samples -- on a 2-core machine shared with other work; every run evaluated
every 20 s, FedAvg included): FedAvg reaches its target in 1140/1660/2040 s (seeds 0/1/2). At
concurrency 50: FedAsync 2.31x, FedBuff K=5 2.09x; their serving models (decay 0.95) 2.47x and
3.23x.
Combinations (`levers` in results/fleet.json; chosen on seed 0 only, before the partition fix, by
benchmarks/fleet_sweep.py combos, results/fleet_sweep_combos.json; the same FedAvg runs, targets):
                                               iterate   serving   device-s to target (serving)
  equal concurrency 50: FedBuff K=5, cosine     2.26x     3.38x     25,000  (FedAvg 42,100)
    server lr (1 -> 0.1 over 300 steps), serving decay 0.9
  over-commit 2x: concurrency 100, K=10, same   2.67x     4.20x     41,300
  over-commit 4x: concurrency 200, K=20, same   3.90x     4.38x     73,300  (per seed serving
                                                                    3.2, 4.6, 5.4x)
  over-commit 4x, constant server lr            2.75x     4.38x     73,300
  sync FedAvg over-committed 4x (NOT baseline)  1.20x     0.87x    212,000
Issue 16 part 4 (chosen on held-out seeds 3-5, benchmarks/fleet_sweep.py heldout, never on 0-2;
serving decay 0.95 = server.recommended's default above 100 concurrent devices, K = c / 10):
  over-commit 4x, K=20, cosine, serving 0.95    3.90x     4.95x     66,700  (3.17, 4.88, 6.80x)
  over-commit 6x: concurrency 300, K=30, same   3.36x     5.40x    102,000  (3.17, 3.77, 9.27x)
    = server.recommended's default for 300 concurrent devices
  over-commit 6x, constant server lr            1.33x     5.40x    102,000  (same serving times)
  over-commit 8x: concurrency 400, K=40, same   3.16x     5.84x    128,000  (3.35, 3.95, 10.2x)
GOAL >= 5x on the mean of the per-seed ratios: MET on seeds 0-2 with over-commit 6x (5.40x) and
8x (5.84x), serving model, but NOT on every seed and NOT on the held-out seeds: seed 0 stays at
340-360 s (3.2-3.4x) and seed 1 at 3.8-4.0x; the mean is carried by seed 2 (FedAvg's slowest,
2040 s). Total time over seeds 0-2 (FedAvg 4840 s): 6x 1020 s (4.75x), 8x 960 s (5.04x). On
held-out seeds 3-5 (fleet_sweep_heldout.json; FedAvg 1660 / 2820 / 1400 s) the same recipes gave
4.74x (6x: 3.61, 5.22, 5.38) and 4.82x (8x: 4.61, 4.03, 5.83): 5x is at the edge, not a margin.
The cost is device time: 2.4x (6x) and 3.0x (8x) FedAvg's device-seconds to the target.
What moved it: a wider over-commit with K = c / 10 (staleness stays ~9.6; 4x -> 6x -> 8x on
seeds 3-5: 3.5 -> 4.7 -> 4.8x) and the cosine server lr at 6x (held-out seed 4: 780 -> 540 s;
seeds 0-2 unchanged). Serving decay 0.95 vs 0.9 is noise: at 4x it gave 4.95 vs 4.38x on seeds
0-2 but 3.52 vs 3.67x on seeds 3-5. The serving EMA already starts as the exact mean of the
versions so far (server/serving.py: no lag from the initial model), and polynomial-decay
averaging (Shamir & Zhang) or a uniform window of the last 30 versions, screened offline on seeds
3-5 (a scratch script, not in a results file), were within one 20 s grid step of the EMA 0.95:
no new serving mode. The iterate sits on a noise floor below the target at 6x/8x with a constant
server lr (1.33x); the cosine brings it to 3.36x. Screened worse (seeds 3-5, 20 virtual minutes,
scratch): server lr 1.5 and 2, staleness exponent 0.3 or 0.75, a faster cosine (100 or 150
steps: seed 4 stalled below its target), K = 20 at 6x (c / 15). Stretch 8x: not met.
With the server's default robust defence on (what an empty server.toml runs; the levers above
run none), the same 6x default reaches the target 5.40x sooner than FedAvg, with the same per-seed
serving times as undefended (360 / 440 / 220 s; iterate 3.76x against 3.36x); on the held-out
seeds 3-5 (scratch run against fleet_sweep_heldout.json's FedAvg times) 4.31x (440 / 560 / 340 s;
undefended 4.74x). Before this session's change to the cosine aggregate (FLTrust's weighting:
every row rescaled to the median's norm, weighted by its cosine) it was 3.64x (500 / 560 / 360 s)
at the same throughput: the defence dropped 0.3% of rows, but the coordinate-wise median of 30
rows is ~0.57x as long as their mean, so the step was 0.57x (10th-90th percentile 0.50-0.67x) the
undefended one, and the model plateaued lower. Scratch screens (seeds 0-2, not in a results
file): server lr 1.75 with FLTrust 3.86x; FLTrust with trust weighted by staleness 3.78x;
agreeing rows counted once at full length 5.40x (weaker against attacks, docs/security.md
"Skewed fleets and the default defence"); cut to the median row length 4.82x (held-out 3.69x); cut
to s(tau) x the median delta length (adopted) 5.40x.
Devices training SGD at lr 0.3 (the export default since the parity work; models/
local_optimizer.py) with the same defended 6x default: 6.02x the AdamW FedAvg baseline's speed
(serving 360 / 260 / 240 s; iterate 6.72x); held-out seeds 3-5 5.44x (scratch). FedAvg with SGD
0.3 is its own lever row (NOT the baseline): 1,460 / 1,440 / 1,480 s, so against the same local
optimizer async is ~5.5x (serving) and ~6.5x (iterate). `--rerun-levers TEXT` re-runs only the
matching levers into fleet.json.
Earlier (the integrator's re-run before part 4): best 4.38x serving at 4x over-commit, 1.7x
FedAvg's device time. Before the partition fix the same recipe measured 6.00x serving / 4.78x
iterate (per seed 3.8, 7.1, 7.1x): the fix made the fleet's data less degenerate, FedAvg's seed 2
slower (1280 -> 2040 s) and async's seed 1-2 wins smaller. The analysis below is from that earlier
run (marked "pre-fix"); its ratios hold on the re-run (FedAsync 39.1 vs FedAvg 26.7 accepted
updates per virtual minute, 1.46x; stragglers hold 53% vs 30% of slots; FedBuff K=5 staleness
9.3, 559 vs 678 updates to the target, 1.2x). Stretch 8x: not met.

Why the advantage is small at equal concurrency (pre-fix run; means over seeds, report keys):
  - throughput: async accepts 1.5x the updates per virtual minute of FedAvg (48.8 vs 32.9
    [accepted_per_virtual_min]): stragglers hold 53% of the async slots (FedAvg 30%: it aborts
    them when a round closes) [straggler_slot_share];
  - update efficiency: FedBuff K=5 needs 511 accepted updates to the target vs FedAvg's 723
    [updates_to_target], 1.4x fewer; staleness mean 9.4 (FedAsync 47) [staleness_mean].
  Speedup ~ throughput ratio x efficiency ratio: 1.5 x 1.4 ~ 2.1x (2.6x measured). More slots
  give throughput, but each extra concurrent device adds staleness and noise: with K fixed at 5,
  concurrency 100 doubled tau and updates-to-target (fleet_levers.json, previous run). The
  accuracy curves show the rest: async gets to ~0.89 in 2-3 minutes, then its iterate hovers
  there (non-IID, Adam-normalised deltas of 4 local steps), so the last points to the target
  are a noise floor, which an average or a shrinking step removes, not more updates.
Pre-fix, the same combinations gave: equal concurrency 2.81x iterate / 3.74x serving, 2x
over-commit 3.80x / 4.50x, 4x over-commit 4.78x / 6.00x (per seed serving 3.8, 7.1, 7.1x), 4x
with constant server lr 3.17x / 5.35x, sync FedAvg over-committed 4x 1.37x / 0.84x. The grid
matters for the noisy iterate only: re-reading those curves on a 60 s grid gave the 4x
combination 6.13x (serving) but 3.36x (iterate). K = concurrency/10 keeps staleness ~10 steps
(K=10 at concurrency 200 gave tau 18 and 440 s on seed 0); sync FedAvg gains little from the same
over-commit (a round still waits for its 153rd of 200), so over-commit is an async lever.
Added on top of the 4x combination (pre-fix, seed 0, results/fleet_sweep_combos-extra.json; it gets
3.35x iterate / 3.8x serving there), every other literature lever made it worse: a 3x session
timeout 2.28x / 2.71x, constant staleness 1.46x / 1.68x, hinge 2.04x / 1.90x, FedAvgM (beta 0.5,
lr 0.5) 2.19x / 2.71x, FedAdam (lr 0.003) 2.71x / 2.59x: larger or less damped steps raise the
noise floor, and a timeout drops the stragglers' non-IID data. A step lr schedule that decays to
zero froze the model at 0.936-0.944 final accuracy, hence the cosine floor.
Compression (top-2% + int8) stays 24-31x fewer bytes but slower (0.64x FedAsync, 0.50x FedBuff).
A compact update header (a top-2% + int8 update of this 9,610-parameter model is 696 bytes, of
which about 290 are header) and a real availability trace (`--trace`) remain the open levers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.sim.compare import DIAGNOSTIC_KEYS, SUMMARY_KEYS, compare  # noqa: E402
from fleet.sim.engine import Mode  # noqa: E402
from fleet.sim.profiles import FleetConfig  # noqa: E402
from fleet.sim.runner import Experiment, parse_strategy  # noqa: E402
from fleet.sim.world import Setup  # noqa: E402
from models.local_optimizer import default_learning_rate  # noqa: E402
from server.recommended import recommended_strategy  # noqa: E402
from server.robust import DEFENCES  # noqa: E402

# Chosen on seed 0 only (benchmarks/fleet_sweep.py, results/fleet_sweep_*.json): topk 2% + int8
# had the best bytes-to-target of topk {2, 5, 10}% x {int8, int4} and plain int4; FedBuff K=5 with
# server lr 1, no momentum, the best time-to-target of K {5, 10, 20} x lr {0.5, 1, 2} x momentum
# {0, 0.5}. The async session timeout stays off (2x and 3x the median made things worse).
BEST_CODEC = {"name": "topk", "fraction": 0.02, "values": {"name": "int8", "chunk": 256}}
STRATEGIES = ("fedavg", "fedasync:polynomial", "fedbuff:5:polynomial")
ANCHORS = {
    "fedbuff_paper_speedup": 3.3,
    "papaya_speedup": 5.0,
    "goal_speedup": 5.0,
    "goal_bytes_reduction": 30.0,
}
KEYS = (*SUMMARY_KEYS, *DIAGNOSTIC_KEYS, "seeds_reaching_target")  # the last one is not per seed
SERVING_DECAY = 0.95  # every run also reports its serving average (the iterate is unchanged)
RESULTS = ROOT / "benchmarks/results/fleet.json"
EVAL_EVERY_S = 20  # every run, the baseline too: async reaches the target in ~5 minutes, and a
# 60 s grid rounded that up by up to 20% (FedAvg's ~20-30 minutes move by at most 40 s)
# What the literature does about a small async advantage (issue 16), each on the same seeds and
# compared with the SAME FedAvg baseline times (its runs above, never re-tuned). Combinations
# chosen on seed 0 only (benchmarks/fleet_sweep.py combos, results/fleet_sweep_combos.json):
# cosine: lr 1 -> 0.1 over 300 server steps, then 0.1 (keeps learning; a step schedule that
# decays to zero froze the model at 0.936-0.944 final accuracy)
COSINE = {
    "name": "sgd",
    "lr": 1.0,
    "lr_schedule": {"name": "cosine", "total_steps": 300, "min_factor": 0.1},
}
Lever = tuple[str, dict[str, Any], str, dict[str, Any] | None]


def _local_title(optimizer: str) -> str:
    return f", devices training {optimizer.upper()} lr {default_learning_rate(optimizer):g}"


def _recommended_lever(
    concurrency: int, defence: str | None = None, local_optimizer: str | None = None
) -> Lever:
    """server.recommended's default for `concurrency` devices training at once, as a lever;
    `defence`: also the server's robust-aggregation preset (server/robust/presets.py);
    `local_optimizer`: devices train with it at its export default rate (else AdamW, 0.01)."""
    rec = recommended_strategy(concurrency)
    table = rec.strategy
    # the simulator's "polynomial" is a = 0.5; the default's sgd step is the optimizer below
    assert table["staleness"] == {"function": "polynomial", "a": 0.5}, table
    assert table["optimizer"] == {"name": "sgd"}, table
    optimizer = {"name": "sgd", "lr": table["server_lr"]}
    if "lr_schedule" in table:
        optimizer["lr_schedule"] = table["lr_schedule"]
    change: dict[str, Any] = {"concurrency": concurrency, "serving_decay": rec.serving_decay}
    if defence is not None:
        change["robust"] = defence
    if local_optimizer is not None:
        change["local_optimizer"] = local_optimizer
    return (
        f"over-commit {concurrency // 50}x: concurrency {concurrency}, server.recommended's"
        f" default (K={rec.buffer_size}, sgd lr {table['server_lr']}"
        f" {table.get('lr_schedule', {}).get('name', 'constant')}, serving {rec.serving_decay})"
        + ("" if defence is None else f" + the {defence!r} robust defence")
        + ("" if local_optimizer is None else _local_title(local_optimizer)),
        change,
        f"fedbuff:{rec.buffer_size}:polynomial",
        optimizer,
    )


LEVERS: tuple[Lever, ...] = (
    ("equal concurrency: FedBuff K=5 + cosine lr + serving 0.9", {"serving_decay": 0.9},
     "fedbuff:5:polynomial", COSINE),
    ("over-commit 2x: concurrency 100, K=10 + cosine lr + serving 0.9",
     {"concurrency": 100, "serving_decay": 0.9}, "fedbuff:10:polynomial", COSINE),
    ("over-commit 4x: concurrency 200, K=20 + serving 0.9 (seed 0's best serving model)",
     {"concurrency": 200, "serving_decay": 0.9}, "fedbuff:20:polynomial", None),
    ("over-commit 4x: concurrency 200, K=20 + cosine lr + serving 0.9",
     {"concurrency": 200, "serving_decay": 0.9}, "fedbuff:20:polynomial", COSINE),
    # issue 16 part 4, chosen on held-out seeds 3-5 (never the benchmark's seeds 0-2; FedAvg's own
    # runs there set their targets): 6x with a ~20-version serving average; 4x and 8x alongside
    ("over-commit 4x: concurrency 200, K=20 + cosine lr + serving 0.95",
     {"concurrency": 200, "serving_decay": 0.95}, "fedbuff:20:polynomial", COSINE),
    ("over-commit 6x: concurrency 300, K=30 + constant server lr + serving 0.95",
     {"concurrency": 300, "serving_decay": 0.95}, "fedbuff:30:polynomial", None),
    _recommended_lever(300),  # K=30, cosine lr (= COSINE), serving 0.95
    # what a server started with an empty server.toml runs: the default robust defence on too
    _recommended_lever(300, "default"),
    # devices training SGD, the export default since issue 16's last session (models/
    # local_optimizer.py); the baseline stays FedAvg with AdamW, and FedAvg with SGD is shown
    _recommended_lever(300, "default", "sgd"),
    ("sync FedAvg" + _local_title("sgd") + " (the same optimizer; NOT the baseline)",
     {"local_optimizer": "sgd"}, "fedavg", None),
    ("over-commit 8x: concurrency 400, K=40 + cosine lr + serving 0.95",
     {"concurrency": 400, "serving_decay": 0.95}, "fedbuff:40:polynomial", COSINE),
    ("sync FedAvg with the same 4x over-commit (concurrency 200; NOT the baseline)",
     {"concurrency": 200}, "fedavg", None),
)  # fmt: skip


def _specs() -> list[Any]:
    specs = [parse_strategy(s) for s in STRATEGIES]
    specs += [
        parse_strategy(s, BEST_CODEC) for s in STRATEGIES if parse_strategy(s).mode is Mode.ASYNC
    ]
    return specs


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "t":
        return f"{v / 60:.1f} min"
    if kind == "b":
        return f"{v / 1e6:.2f} MB"
    if kind == "x":
        return f"{v:.2f}x"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _export(work: Path, optimizer: str | None = None) -> Path:
    """The digits MLP: the simulator's AdamW at its rate, or `optimizer` at its export default."""
    from models.export import export_artifacts

    out = work / ("mlp" if optimizer is None else f"mlp-{optimizer}")
    if not (out / "manifest.json").exists():
        rate = Setup().learning_rate if optimizer is None else None  # None: the export default
        export_artifacts("mlp", (64,), 10, out, seed=0, learning_rate=rate,
                         optimizer=optimizer or Setup().optimizer)  # fmt: skip
    return out


def _fedbuff_run(setup: Setup, devices: int, exp: Experiment, work: Path) -> dict[str, Any]:
    """One seed-0 FedBuff K=10 float32 run on `devices` devices; its run record."""
    rep = compare(
        [parse_strategy("fedbuff:10:polynomial")],
        exp,
        Setup(devices=devices, alpha=setup.alpha, fleet=setup.fleet, artifacts=setup.artifacts),
        [0],
        work,
        target=0.5,
        progress=lambda _m: None,
    )
    run: dict[str, Any] = next(iter(rep["per_seed"]["0"]["runs"].values()))
    return run


def _scaling(setup: Setup, sizes: list[int], minutes: float, work: Path) -> dict[str, Any]:
    """FedBuff K=10 float32 for `minutes` virtual minutes, concurrency 5% of the fleet."""
    points = []
    for n in sizes:
        exp = Experiment(concurrency=max(10, n // 20), duration_s=minutes * 60, eval_every_s=600)
        t0 = time.perf_counter()
        run = _fedbuff_run(setup, n, exp, work / f"scaling-{n}")
        wall = time.perf_counter() - t0
        points.append(
            {
                "devices": n,
                "concurrency": exp.concurrency,
                "virtual_minutes": minutes,
                "updates": run["updates_accepted"],
                "sessions": run["counts"].get("sessions", 0),
                "wall_s": wall,
                "run_wall_s": run["sim_wall_s"],
                "train_wall_s": run["wall_train_s"],
                "updates_per_wall_s": run["updates_accepted"] / run["sim_wall_s"],
            }
        )
        print(f"scaling: {points[-1]}", flush=True)
    # wall ~ a + b * devices (updates grow with concurrency = 5% of devices): fit, extrapolate
    xs = [p["devices"] for p in points]
    ys = [p["run_wall_s"] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    a = my - b * mx
    per_hour = 60.0 / minutes  # the same fleet for one virtual hour costs this many times more
    largest = int((600.0 / per_hour - a) / b) if b > 0 else None
    return {
        "points": points,
        "fit_wall_s": {"intercept": a, "per_device": b, "virtual_minutes": minutes},
        "largest_fleet_1_virtual_hour_in_10_min_wall": largest,
        "largest_fleet_is": "EXTRAPOLATED (linear fit of measured points; never run at that size)",
        "definition": "FedBuff K=10 float32, concurrency 5% of devices, 1 virtual hour",
        "bound": "real ORT training per update (one core); fleet size itself is cheap, see"
        " fixed_concurrency_measured",
    }


def _large_fleets(setup: Setup, sizes: list[int], work: Path) -> list[dict[str, Any]]:
    """Fleet size at fixed concurrency (50): the cost is per device (profiles, windows, events)
    plus per update (training), so this shows what the fleet size alone costs."""
    points = []
    for n in sizes:
        exp = Experiment(concurrency=50, duration_s=20 * 60, eval_every_s=600)
        t0 = time.perf_counter()
        run = _fedbuff_run(setup, n, exp, work / f"large-{n}")
        points.append(
            {
                "devices": n,
                "concurrency": 50,
                "virtual_minutes": 20,
                "updates": run["updates_accepted"],
                "total_wall_s": time.perf_counter() - t0,  # fleet + data setup + run
                "run_wall_s": run["sim_wall_s"],
            }
        )
        print(f"large fleet: {points[-1]}", flush=True)
    return points


def _levers(
    setup: Setup,
    exp: Experiment,
    seeds: list[int],
    report: dict[str, Any],
    work: Path,
    levers: tuple[Lever, ...] = LEVERS,
) -> list[dict[str, Any]]:
    """Each lever's time to the same per-seed target, as a ratio to the baseline's runs above."""
    base = report["per_seed"]
    rows: list[dict[str, Any]] = []
    for title, change, strategy, optimizer in levers:
        # a lever names its defence (JSON-friendly); the experiment takes the preset's config
        robust = {"robust": DEFENCES[change["robust"]]} if "robust" in change else {}
        exp_change = {k: v for k, v in change.items() if k != "local_optimizer"}
        lever_exp = dataclasses.replace(exp, **(exp_change | robust))
        lever_setup = setup
        if "local_optimizer" in change:  # the same model exported with another local optimizer
            art = _export(work, change["local_optimizer"])
            lever_setup = dataclasses.replace(setup, artifacts=art)
        spec = parse_strategy(strategy, optimizer=optimizer)
        per_seed = {}
        for seed in seeds:
            target = base[str(seed)]["target"]
            rep = compare([spec], lever_exp, lever_setup, [seed],
                          work / f"lever-{len(rows)}-{seed}", target=target,
                          progress=lambda m: print(m, flush=True))  # fmt: skip
            run = rep["per_seed"][str(seed)]["runs"][spec.label]
            fedavg = base[str(seed)]["runs"]["fedavg/float32"]
            fedavg_t, fedavg_ds = fedavg["time_to_target_s"], fedavg.get("device_seconds_to_target")
            t = run["time_to_target_s"]
            per_seed[str(seed)] = {
                "time_to_target_s": t,
                "speedup_vs_fedavg": _ratio(fedavg_t, t),
                "serving_speedup_vs_fedavg": _ratio(fedavg_t, run["serving_time_to_target_s"]),
                "fedavg_device_seconds_to_target": fedavg_ds,
                "final_accuracy": run["final_accuracy"],
                **{k: run[k] for k in DIAGNOSTIC_KEYS if k != "update_efficiency_vs_fedavg"},
            }
        times = [r["time_to_target_s"] for r in per_seed.values()]
        rows.append(
            {
                "lever": title,
                "strategy": spec.label,
                "change": change,
                "speedup_vs_fedavg": _mean(per_seed, "speedup_vs_fedavg"),
                "serving_speedup_vs_fedavg": _mean(per_seed, "serving_speedup_vs_fedavg"),
                "device_seconds_to_target": _mean(per_seed, "device_seconds_to_target"),
                "serving_device_seconds_to_target": _mean(
                    per_seed, "serving_device_seconds_to_target"
                ),
                "fedavg_device_seconds_to_target": _mean(
                    per_seed, "fedavg_device_seconds_to_target"
                ),
                "seeds_reaching_target": sum(t is not None for t in times),
                "per_seed": per_seed,
            }
        )
        print(
            f"lever {title}: iterate {rows[-1]['speedup_vs_fedavg']},"
            f" serving {rows[-1]['serving_speedup_vs_fedavg']}",
            flush=True,
        )
    return rows


def _ratio(base: float | None, ours: float | None) -> float | None:
    return None if base is None or not ours else base / ours


def _mean(per_seed: dict[str, dict[str, Any]], key: str) -> float | None:
    """Mean over the seeds that have the value (a seed that missed the target has None)."""
    values = [r[key] for r in per_seed.values() if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _recorded_baseline(recorded: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """fleet.json's FedAvg runs and targets as a `compare` report (deterministic per seed)."""
    fedavg = recorded["results"]["fedavg/float32"]["per_seed"]
    return {
        "per_seed": {
            str(s): {
                "target": recorded["targets"][str(s)],
                "runs": {
                    "fedavg/float32": {
                        k: fedavg[str(s)].get(k)
                        for k in ("time_to_target_s", "device_seconds_to_target")
                    }
                },
            }
            for s in seeds
        }
    }


def _rerun_levers(setup: Setup, exp: Experiment, seeds: list[int], work: Path, match: str) -> int:
    """The levers whose title contains `match`, against the recorded baseline; their rows in
    results/fleet.json are replaced (or added, in LEVERS order), the other rows kept as measured."""
    recorded = json.loads(RESULTS.read_text())
    chosen = tuple(lever for lever in LEVERS if match in lever[0])
    if not chosen:
        raise SystemExit(f"no lever title contains {match!r}")
    new = _levers(setup, exp, seeds, _recorded_baseline(recorded, seeds), work, chosen)
    by_title = {r["lever"]: r for r in recorded.get("levers", [])} | {r["lever"]: r for r in new}
    order = [lever[0] for lever in LEVERS]
    recorded["levers"] = sorted(by_title.values(), key=lambda r: _lever_rank(order, r["lever"]))
    RESULTS.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"updated {len(new)} lever row(s) in {RESULTS}")
    return 0


def _lever_rank(order: list[str], title: str) -> int:
    return order.index(title) if title in order else len(order)


def _levers_only(setup: Setup, exp: Experiment, seeds: list[int], work: Path) -> int:
    """The levers against the recorded baseline (FedAvg runs are deterministic per seed)."""
    recorded = json.loads(RESULTS.read_text())
    report = _recorded_baseline(recorded, seeds)
    t0 = time.perf_counter()
    rows = _levers(setup, exp, seeds, report, work)
    doc = {
        "seeds": seeds,
        "levers": rows,
        "wall_s": time.perf_counter() - t0,
        "baseline": "fedavg/float32 per-seed times and targets from results/fleet.json",
    }
    path = ROOT / "benchmarks/results/fleet_levers.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, 30 virtual minutes")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--artifacts", type=Path, help="exported mlp (default: export it)")
    ap.add_argument("--hours", type=float, default=1.5, help="virtual hours per run")
    ap.add_argument("--no-levers", action="store_true", help="skip the issue-16 levers")
    ap.add_argument(
        "--levers-only",
        action="store_true",
        help="only the levers, against the FedAvg runs recorded in results/fleet.json;"
        " writes results/fleet_levers.json",
    )
    ap.add_argument(
        "--rerun-levers",
        metavar="TEXT",
        help="only the levers whose title contains TEXT, against the FedAvg runs recorded in"
        " results/fleet.json; replaces their rows there and keeps the rest",
    )
    ns = ap.parse_args()
    load_start = os.getloadavg()
    seeds = [0] if ns.quick else [0, 1, 2]
    hours = 0.5 if ns.quick else ns.hours
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    out = work / "report"
    art = ns.artifacts or _export(work)
    setup = Setup(devices=1000, alpha=0.3, fleet=FleetConfig(straggler_fraction=0.15),
                  artifacts=art)  # fmt: skip
    exp = Experiment(
        concurrency=50,
        duration_s=hours * 3600,
        eval_every_s=EVAL_EVERY_S,
        serving_decay=SERVING_DECAY,
    )
    if ns.rerun_levers:
        return _rerun_levers(setup, exp, seeds, work, ns.rerun_levers)
    if ns.levers_only:
        return _levers_only(setup, exp, seeds, work)
    t0 = time.perf_counter()
    report = compare(_specs(), exp, setup, seeds, out, progress=lambda m: print(m, flush=True))
    main_wall = time.perf_counter() - t0
    agg = report["aggregate"]
    results = {label: {k: row[k] for k in KEYS} for label, row in agg.items()}
    for label, row in results.items():
        row["per_seed"] = {
            s: {k: report["per_seed"][s]["runs"][label][k] for k in KEYS[:-1]}
            for s in report["per_seed"]
        }
    doc: dict[str, Any] = {
        "devices": report["devices"],
        "seeds": seeds,
        "sim_wall_s": main_wall,
        "targets": {s: report["per_seed"][s]["target"] for s in report["per_seed"]},
        "results": results,
        "anchors": ANCHORS,
        "config": {
            "alpha": 0.3,
            "stragglers": "15% of devices 10x slower; lognormal(0, 0.6) speeds",
            "distinct_data_slices": report["distinct_data_slices"],
            "virtual_hours": hours,
            "concurrency": exp.concurrency,
            "fedavg_round_size": exp.round_size,
            "best_codec": BEST_CODEC,
            "tuning": "async defaults and the levers' combinations chosen by"
            " benchmarks/fleet_sweep.py on seed 0 only (results/fleet_sweep_*.json); the FedAvg"
            " baseline is not tuned or changed",
            "eval_every_s": EVAL_EVERY_S,
            "experiment": report["experiment"],
            "trainer": report["trainer"],
            "model": f"{report['model']} ({report['num_params']} params)",
        },
    }
    if not ns.no_levers:
        doc["levers"] = _levers(setup, exp, seeds, report, work)
    recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() and not ns.quick else {}
    if ns.no_scaling and recorded.get("scaling") is not None:
        note = "from the previous full run (--no-scaling)"
        doc["scaling"] = {**recorded["scaling"], "note": note}
    if ns.no_levers and recorded.get("levers") is not None:
        doc["levers"] = recorded["levers"]  # as recorded: --no-levers did not re-run them
    if recorded.get("downlink") is not None:
        doc["downlink"] = recorded["downlink"]  # benchmarks/fleet_downlink.py writes it
    if not ns.no_scaling and not ns.quick:
        doc["scaling"] = _scaling(setup, [1000, 4000, 16000], minutes=20, work=work)
        doc["scaling"]["fixed_concurrency_measured"] = _large_fleets(
            setup, [100_000, 1_000_000], work
        )
    doc["total_wall_s"] = time.perf_counter() - t0
    # virtual clock: times, bytes and accuracies do not depend on the load, the wall times do
    doc["load_average_start"], doc["load_average_end"] = load_start, os.getloadavg()
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    plots = ROOT / "benchmarks/results/fleet"
    plots.mkdir(exist_ok=True)
    for png in (out / "seed0").glob("*.png"):  # seed 0's plots; the full report stays in work
        shutil.copy(png, plots / png.name)
    head = ("run", "time->target", "bytes->target", "speedup", "bytes red.", "final acc", "wall")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, r in results.items():
        cells = (
            label,
            _fmt(r["time_to_target_s"], "t"),
            _fmt(r["uplink_bytes_to_target"], "b"),
            _fmt(r["speedup_vs_fedavg"], "x"),
            _fmt(r["bytes_reduction_vs_fedavg"], "x"),
            _fmt(r["final_accuracy"], ""),
            f"{r['sim_wall_s']:.1f} s",
        )
        print("| " + " | ".join(cells) + " |")
    print(f"\n{doc['devices']} devices, seeds {seeds}, means over seeds; targets {doc['targets']}")
    print(f"simulation wall {main_wall:.0f} s; wrote {RESULTS}, plots in {plots}, report in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
