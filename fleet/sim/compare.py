"""Side-by-side comparison: every strategy/codec on the same fleet, data and seed; several seeds.

Writes `report.json` (per-seed and seed-mean summaries, accuracy curves) and, per seed, the plots
`seed<S>/accuracy_vs_time.png` and `seed<S>/accuracy_vs_bytes.png`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fleet.sim.engine import Mode, RunResult
from fleet.sim.report import default_target, plot_runs, summarise, write_report
from fleet.sim.runner import Experiment, StrategySpec, run_in_world
from fleet.sim.world import Setup, load_world, prepare_trainer
from protocol.errors import ConfigError

__all__ = ["DIAGNOSTIC_KEYS", "SUMMARY_KEYS", "compare", "mean_over_seeds"]

log = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "time_to_target_s",
    "uplink_bytes_to_target",
    "downlink_bytes_to_target",
    "downlink_whole_float32_bytes_to_target",
    "downlink_reduction_vs_whole_float32",
    "speedup_vs_fedavg",
    "bytes_reduction_vs_fedavg",
    "final_accuracy",
    "sim_wall_s",
)
# fleet/sim/report.diagnostics: why a run is as fast as it is (means over seeds, like the above)
DIAGNOSTIC_KEYS = (
    "accepted_per_virtual_min",
    "straggler_slot_share",
    "staleness_mean",
    "staleness_p90",
    "updates_to_target",
    "update_efficiency_vs_fedavg",
    "serving_time_to_target_s",
    "serving_final_accuracy",
    "device_seconds_to_target",
    "serving_device_seconds_to_target",
)


def mean_over_seeds(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each key over seeds; a run that missed the target on a seed is counted apart."""
    out: dict[str, Any] = {}
    for label in per_seed[0]:
        row: dict[str, Any] = {}
        for key in (*SUMMARY_KEYS, *DIAGNOSTIC_KEYS):
            values = [s[label][key] for s in per_seed if s[label].get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
        row["seeds_reaching_target"] = sum(
            s[label]["time_to_target_s"] is not None for s in per_seed
        )
        if "epsilon_spent" in per_seed[0][label]:  # DP: the worst seed's spend
            row["epsilon_spent"] = max(s[label]["epsilon_spent"] for s in per_seed)
        out[label] = row
    return out


def compare(
    specs: Sequence[StrategySpec],
    exp: Experiment,
    setup: Setup,
    seeds: Sequence[int],
    out_dir: Path,
    target: float | None = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    baselines = [s for s in specs if s.mode is Mode.SYNC and s.codec.get("name") == "float32"]
    if not baselines and target is None:
        raise ConfigError("no float32 fedavg run to set the target from: add it or pass --target")
    specs = sorted(specs, key=lambda s: s.mode is not Mode.SYNC)  # the baseline first
    t0 = time.perf_counter()
    first = load_world(setup, exp.duration_s, seeds[0])  # bad data or trace fails before export
    trainer, manifest, initial = prepare_trainer(setup, out_dir)
    per_seed: dict[str, Any] = {}
    curves: dict[str, list[RunResult]] = {}
    for seed in seeds:
        world = first if seed == seeds[0] else load_world(setup, exp.duration_s, seed)
        runs: list[RunResult] = []
        for spec in specs:
            result, _server = run_in_world(
                spec,
                exp,
                world,
                manifest=manifest,
                initial=initial,
                trainer=trainer,
                seed=seed,
            )
            runs.append(result)
            progress(
                f"seed {seed} {result.label}: final accuracy {result.final_accuracy:.3f},"
                f" {result.accepted} updates, {result.uplink_bytes / 1e6:.1f} MB up,"
                f" wall {result.wall_s:.1f} s"
            )
        base = [r for r, s in zip(runs, specs, strict=True) if s in baselines]
        seed_target = target if target is not None else default_target(base)
        summary = summarise(runs, base[0] if base else runs[0], seed_target)
        per_seed[str(seed)] = {"target": seed_target, "runs": summary}
        curves[str(seed)] = runs
        plot_runs(
            out_dir / f"seed{seed}", runs, seed_target, f"{len(world.fleet)} devices, seed {seed}"
        )
    meta = {
        "devices": len(first.fleet),
        "distinct_data_slices": first.distinct_slices,
        "seeds": list(seeds),
        "model": manifest.model_name,
        "num_params": manifest.num_params,
        "trainer": trainer.name,
        "experiment": _jsonable(asdict(exp)),
        "setup": _jsonable(asdict(setup)),
        "aggregate": mean_over_seeds([per_seed[str(s)]["runs"] for s in seeds]),
        "per_seed": per_seed,
        "sim_wall_s": time.perf_counter() - t0,
    }
    write_report(out_dir / "report.json", meta, curves)
    return meta


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and not isinstance(value, int | float | str | bool):
        return value.value  # Enums
    return value
