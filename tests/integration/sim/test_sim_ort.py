"""The simulator with the production ORT trainer: no built-in bias, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fleet.partition import digits_dataset, dirichlet_partition
from fleet.sim.profiles import Availability, FleetConfig, make_fleet
from fleet.sim.runner import Experiment, parse_strategy, run_one
from fleet.sim.training import LocalBudget
from fleet.sim.world import Setup, prepare_trainer

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.export import export_artifacts

    out = tmp_path_factory.mktemp("sim-artifacts") / "mlp"
    export_artifacts("mlp", (64,), 10, out, seed=0, learning_rate=0.01, optimizer="adamw")
    return out


def test_equal_fleet_gives_fedavg_and_fedbuff_k_cohort_the_same_trajectory(
    artifacts: Path, tmp_path: Path
) -> None:
    """Equal speed, bandwidth and data size, always available, no drop-outs, no over-selection:
    sync FedAvg (cohort K) and FedBuff (buffer K, concurrency K) must learn alike."""
    trainer, manifest, initial = prepare_trainer(Setup(artifacts=artifacts), tmp_path)
    d = digits_dataset(0)
    devices, k = 40, 10
    slices = dirichlet_partition(d.y_train, devices, alpha=1.0, seed=0, min_size=16)
    assert min(len(s) for s in slices) >= 8
    exp = Experiment(
        concurrency=k,
        over_selection=0.0,
        deadline_s=1e6,  # rounds close on the K-th arrival only
        duration_s=1800.0,
        eval_every_s=60.0,
        budget=LocalBudget(max_samples=8, batch_size=4),  # equal session lengths
    )
    assert exp.round_size == k
    equal = FleetConfig(
        speed_sigma=0.0,
        straggler_fraction=0.0,
        bandwidth_sigma=0.0,
        dropout_p=0.0,
        availability=Availability.ALWAYS,
    )
    fleet = make_fleet(devices, equal, exp.duration_s, seed=0)
    data = (d.x_train, d.y_train, d.x_test, d.y_test)
    curves = {}
    for name in ("fedavg", f"fedbuff:{k}:constant"):
        result, _ = run_one(
            parse_strategy(name),
            exp,
            manifest=manifest,
            initial=initial,
            fleet=fleet,
            slices=slices,
            data=data,
            trainer=trainer,
            seed=0,
        )
        curves[name] = np.array([p.accuracy for p in result.curve])
        assert result.rejected == {}
    sync, buff = curves["fedavg"], curves[f"fedbuff:{k}:constant"]
    assert sync.shape == buff.shape
    assert sync[-1] > 0.6 and buff[-1] > 0.6  # both learned
    assert abs(sync[-1] - buff[-1]) < 0.06
    # The whole trajectory, within noise (measured: mean |diff| 0.033). FedBuff trails slightly
    # by design: a freed slot restarts from the current model before the buffer steps, so K-1
    # of each K updates are one version stale.
    assert float(np.mean(np.abs(sync - buff))) < 0.06
    assert abs(float(np.mean(sync)) - float(np.mean(buff))) < 0.04  # area under the curve


def test_cli_writes_report_and_plots(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "fleetlearn", "simulate", "--devices", "200",
        "--duration", "20m", "--concurrency", "20", "--artifacts", str(artifacts),
        "--strategy", "fedavg", "--strategy", "fedbuff:5", "--codec", "float32",
        "--codec", "int8", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["devices"] == 200 and report["seeds"] == [0]
    runs = report["per_seed"]["0"]["runs"]
    assert set(runs) == {
        "fedavg/float32", "fedavg/int8",
        "fedbuff-K5-polynomial/float32", "fedbuff-K5-polynomial/int8",
    }  # fmt: skip
    assert runs["fedavg/float32"]["speedup_vs_fedavg"] == pytest.approx(1.0)
    int8 = runs["fedbuff-K5-polynomial/int8"]["uplink_bytes_total"]
    f32 = runs["fedbuff-K5-polynomial/float32"]["uplink_bytes_total"]
    assert int8 < f32 / 3
    for png in ("accuracy_vs_time.png", "accuracy_vs_bytes.png"):
        assert (out / "seed0" / png).stat().st_size > 10_000


def test_cli_refuses_a_bad_trace_with_a_clear_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("device,start,end\na,10,5\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "fleetlearn", "simulate", "--trace", str(trace),
           "--artifacts", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 2
    assert "t.csv: line 2: need 0 <= start < end" in proc.stderr
