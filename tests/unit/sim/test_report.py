from __future__ import annotations

from pathlib import Path

import pytest

from fleet.sim.cli import parse_duration
from fleet.sim.compare import mean_over_seeds
from fleet.sim.engine import Point, RunResult
from fleet.sim.report import default_target, plot_runs, reached, summarise
from protocol.errors import ConfigError


def _run(label: str, points: list[tuple[float, int, float]]) -> RunResult:
    curve = tuple(Point(t, b, acc, i, i) for i, (t, b, acc) in enumerate(points))
    return RunResult(label, curve, len(points), {}, {}, points[-1][1], 0, 1.0, 0.5, 0.1)


BASE = _run("fedavg", [(0, 0, 0.1), (600, 1000, 0.5), (1200, 2000, 0.8), (1800, 3000, 0.9)])
FAST = _run("fedbuff", [(0, 0, 0.1), (300, 50, 0.86), (600, 100, 0.95)])
NEVER = _run("bad", [(0, 0, 0.1), (1800, 9000, 0.3)])


def test_target_is_95_percent_of_best_fedavg_final() -> None:
    assert default_target([BASE, _run("b2", [(0, 0, 0.6)])]) == pytest.approx(0.855)
    with pytest.raises(ValueError):
        default_target([])


def test_time_and_bytes_to_target_and_ratios_by_hand() -> None:
    target = 0.855  # BASE reaches it at 1800 s / 3000 B; FAST at 300 s / 50 B
    assert reached(BASE, target).time_s == 1800
    assert reached(NEVER, target).time_s is None
    s = summarise([BASE, FAST, NEVER], BASE, target)
    assert s["fedavg"]["speedup_vs_fedavg"] == pytest.approx(1.0)
    assert s["fedbuff"]["speedup_vs_fedavg"] == pytest.approx(6.0)
    assert s["fedbuff"]["bytes_reduction_vs_fedavg"] == pytest.approx(60.0)
    assert s["bad"]["speedup_vs_fedavg"] is None and s["bad"]["final_accuracy"] == 0.3


def test_mean_over_seeds_skips_misses_and_counts_them() -> None:
    a = summarise([BASE, FAST], BASE, 0.855)
    b = summarise([BASE, FAST], BASE, 0.99)  # nobody reaches it on this "seed"
    agg = mean_over_seeds([a, b])
    assert agg["fedbuff"]["speedup_vs_fedavg"] == pytest.approx(6.0)
    assert agg["fedbuff"]["seeds_reaching_target"] == 1
    assert agg["fedbuff"]["final_accuracy"] == pytest.approx(0.95)


def test_plots_are_written(tmp_path: Path) -> None:
    paths = plot_runs(tmp_path / "p", [BASE, FAST], 0.855, "t")
    assert [p.name for p in paths] == ["accuracy_vs_time.png", "accuracy_vs_bytes.png"]
    assert all(p.stat().st_size > 5_000 for p in paths)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("15m", 900), ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "h", "-5m", "0", "3w"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_diagnostics_by_hand() -> None:
    from dataclasses import replace

    from fleet.sim.report import diagnostics

    # accepted counts 0,1,2 at 0/300/600 s; serving curve reaches 0.86 only at 600 s
    curve = (Point(0, 0, 0.1, 0, 0, 0.1, 0.0), Point(300, 50, 0.86, 1, 10, 0.5, 4_000.0),
             Point(600, 100, 0.95, 2, 30, 0.9, 9_500.0))  # fmt: skip
    run = replace(FAST, curve=curve, accepted=30, staleness=(0, 2, 4, 10),
                  slot_seconds={"straggler": 300.0, "other": 100.0})  # fmt: skip
    d = diagnostics(run, BASE, 0.855)
    assert d["accepted_per_virtual_min"] == pytest.approx(3.0)  # 30 in 10 virtual minutes
    assert d["straggler_slot_share"] == pytest.approx(0.75)
    assert d["staleness_mean"] == pytest.approx(4.0) and d["staleness_max"] == 10
    assert d["updates_to_target"] == 10  # BASE needs 3 (its accepted count at 1800 s)
    assert d["update_efficiency_vs_fedavg"] == pytest.approx(0.3)
    assert d["serving_time_to_target_s"] == 600 and d["serving_final_accuracy"] == 0.9
    # device time at the first point each model reached 0.855: the iterate at 300 s, serving 600
    assert d["device_seconds_to_target"] == 4_000.0
    assert d["serving_device_seconds_to_target"] == 9_500.0


def test_server_optimizer_specs_build_production_strategies() -> None:
    from fleet.sim.runner import Experiment, build_strategy, parse_strategy
    from server.optimizers import OptimizerName
    from server.strategies import FedAvg, FedBuff

    spec = parse_strategy("fedbuff:4", optimizer={"name": "adam", "lr": 0.01})
    strategy = build_strategy(spec, Experiment())
    assert isinstance(strategy, FedBuff) and strategy.buffer_size == 4
    assert strategy.server_optimizer.name is OptimizerName.ADAM
    assert strategy.server_optimizer.lr == 0.01 and "+adam0.01" in spec.label
    avgm = {"name": "avgm", "lr": 1.0, "beta1": 0.5}
    sync = build_strategy(parse_strategy("fedavg", optimizer=avgm), Experiment())
    assert isinstance(sync, FedAvg) and sync.server_optimizer.name is OptimizerName.AVGM
    with pytest.raises(ConfigError, match="fedasync has no server step"):
        parse_strategy("fedasync", optimizer={"name": "adam"})
