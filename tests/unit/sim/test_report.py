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
