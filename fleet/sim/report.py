"""What a simulation shows: time and uplink bytes to a target accuracy, as ratios to sync FedAvg.

The target defaults to 95% of the best final accuracy any synchronous FedAvg run reached on the
same fleet, data and seed. Reaching it is read off the evaluation points (every `eval_every_s`
virtual seconds), so times are resolved to that granularity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.sim.engine import Point, RunResult

__all__ = [
    "Reached",
    "default_target",
    "diagnostics",
    "plot_runs",
    "reached",
    "summarise",
    "write_report",
]

TARGET_FRACTION = 0.95


@dataclass(frozen=True)
class Reached:
    time_s: float | None  # virtual seconds to the target; None = never reached
    uplink_bytes: int | None


def reached(run: RunResult, target: float) -> Reached:
    for p in run.curve:
        if p.accuracy >= target:
            return Reached(p.t, p.uplink_bytes)
    return Reached(None, None)


def _updates_to_target(run: RunResult, target: float, serving: bool = False) -> int | None:
    for p in run.curve:
        acc = p.serving_accuracy if serving and p.serving_accuracy is not None else p.accuracy
        if acc >= target:
            return p.accepted
    return None


def _serving_point(run: RunResult, target: float) -> Point | None:
    for p in run.curve:
        if (p.accuracy if p.serving_accuracy is None else p.serving_accuracy) >= target:
            return p
    return None


def _first(run: RunResult, target: float) -> Point | None:
    return next((p for p in run.curve if p.accuracy >= target), None)


def diagnostics(run: RunResult, baseline: RunResult, target: float) -> dict[str, Any]:
    """Why a run is as fast as it is: throughput, straggler slot share, staleness, efficiency."""
    minutes = run.curve[-1].t / 60.0 if run.curve else 0.0
    slots = sum(run.slot_seconds.values())
    tau = np.asarray(run.staleness, np.float64)
    ours, base = _updates_to_target(run, target), _updates_to_target(baseline, target)
    last = run.curve[-1] if run.curve else None
    first, served = _first(run, target), _serving_point(run, target)
    return {
        "accepted_per_virtual_min": run.accepted / minutes if minutes > 0 else None,
        "straggler_slot_share": run.slot_seconds.get("straggler", 0.0) / slots if slots else None,
        "staleness_mean": float(tau.mean()) if tau.size else None,
        "staleness_p50": float(np.percentile(tau, 50)) if tau.size else None,
        "staleness_p90": float(np.percentile(tau, 90)) if tau.size else None,
        "staleness_max": int(tau.max()) if tau.size else None,
        "updates_to_target": ours,
        # > 1: fewer accepted updates than FedAvg needed for the same accuracy
        "update_efficiency_vs_fedavg": _ratio(
            None if base is None else float(base), None if ours is None else float(ours)
        ),
        "serving_time_to_target_s": None if served is None else served.t,
        "serving_final_accuracy": None if last is None else last.serving_accuracy,
        # device time (all sessions, any outcome) spent until the model reached the target
        "device_seconds_to_target": None if first is None else first.device_seconds,
        "serving_device_seconds_to_target": None if served is None else served.device_seconds,
    }


def default_target(baselines: Sequence[RunResult]) -> float:
    if not baselines:
        raise ValueError("the default target needs at least one sync FedAvg run")
    return TARGET_FRACTION * max(r.final_accuracy for r in baselines)


def _ratio(base: float | None, ours: float | None) -> float | None:
    if base is None or ours is None or ours <= 0:
        return None
    return base / ours


def summarise(runs: Sequence[RunResult], baseline: RunResult, target: float) -> dict[str, Any]:
    """Per run: time/bytes to target, ratios to the baseline, final accuracy, wall cost."""
    base = reached(baseline, target)
    out: dict[str, Any] = {}
    for r in runs:
        got = reached(r, target)
        out[r.label] = {
            "time_to_target_s": got.time_s,
            "uplink_bytes_to_target": got.uplink_bytes,
            "speedup_vs_fedavg": _ratio(base.time_s, got.time_s),
            "bytes_reduction_vs_fedavg": _ratio(
                None if base.uplink_bytes is None else float(base.uplink_bytes),
                None if got.uplink_bytes is None else float(got.uplink_bytes),
            ),
            "final_accuracy": r.final_accuracy,
            "updates_accepted": r.accepted,
            "server_steps": r.curve[-1].version,
            "uplink_bytes_total": r.uplink_bytes,
            **_downlink(r, target),
            "rejected": r.rejected,
            "counts": r.counts,
            "sim_wall_s": r.wall_s,
            "wall_train_s": r.wall_train_s,
            "wall_eval_s": r.wall_eval_s,
            **diagnostics(r, baseline, target),
        }
        if r.privacy is not None:  # DP: epsilon spent by the final model, at delta
            out[r.label]["epsilon_spent"] = r.privacy["epsilon"]
            out[r.label]["privacy"] = r.privacy
    return out


def _downlink(run: RunResult, target: float) -> dict[str, Any]:
    """Model bytes pushed to devices until the target (fleet/sim/downlink.py), beside the same
    pushes as whole float32 offers, and their ratio (> 1: deltas sent fewer bytes)."""
    first = _first(run, target)
    ours = None if first is None else first.downlink_bytes
    whole = None if first is None else first.downlink_whole_float32_bytes
    return {
        "downlink_bytes_to_target": ours,
        "downlink_whole_float32_bytes_to_target": whole,
        "downlink_reduction_vs_whole_float32": _ratio(
            None if whole is None else float(whole), None if ours is None else float(ours)
        ),
        "downlink_bytes_total": run.downlink_bytes,
        "downlink_whole_float32_bytes_total": run.downlink_whole_float32_bytes,
    }


def write_report(
    path: Path, meta: dict[str, Any], curves: Mapping[str, Sequence[RunResult]]
) -> None:
    """`meta` plus every run's accuracy curve, keyed by seed then label."""
    doc = dict(meta)
    doc["curves"] = {
        seed: {r.label: [asdict(p) for p in r.curve] for r in runs} for seed, runs in curves.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def plot_runs(out_dir: Path, runs: Sequence[RunResult], target: float, title: str) -> list[Path]:
    """accuracy_vs_time.png and accuracy_vs_bytes.png, one line per strategy (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, xlabel, fname, scale in (
        ("t", "virtual time (hours)", "accuracy_vs_time.png", 1 / 3600),
        ("uplink_bytes", "total uplink bytes (MB)", "accuracy_vs_bytes.png", 1e-6),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in runs:
            xs = [getattr(p, key) * scale for p in r.curve]
            ax.plot(xs, [p.accuracy for p in r.curve], label=r.label, linewidth=1.4)
        ax.axhline(
            target, color="grey", linestyle="--", linewidth=0.8, label=f"target {target:.3f}"
        )
        if key == "uplink_bytes":
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_xlim(left=0.0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
