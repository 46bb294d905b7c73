"""`--data DIR` with data shaped unlike digits: 3-channel sensor windows, 5 classes -> cnn1d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.demo.report import validate_report
from tests.integration.demo.conftest import read_report, run_demo_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANNELS, LENGTH, CLASSES = 3, 32, 5


def sensor_windows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a sine of frequency k+1 on channel k % 3, noise everywhere else."""
    y = rng.integers(0, CLASSES, n).astype(np.int64)
    t = np.linspace(0, 2 * np.pi, LENGTH, dtype=np.float32)  # (L,)
    x = rng.normal(0, 0.3, (n, CHANNELS, LENGTH)).astype(np.float32)  # (n, C, L)
    for i, k in enumerate(y):
        x[i, k % CHANNELS] += np.sin((k + 1) * t + rng.uniform(0, 2 * np.pi))
    return x, y


def test_model_follows_sensor_data(tmp_path: Path, demo_env: dict[str, str]) -> None:
    rng = np.random.default_rng(7)
    data = tmp_path / "sensors"
    for d in range(6):
        folder = data / f"site-{d}"
        folder.mkdir(parents=True)
        x, y = sensor_windows(rng, 120)
        np.savez(folder / "train.npz", x=x, y=y)
    x, y = sensor_windows(rng, 300)
    np.savez(data / "test.npz", x=x, y=y)

    out = tmp_path / "out"
    text = run_demo_cli(
        ["--data", str(data), "--duration", "45", "--target-accuracy", "0.8", "--out", str(out)],
        demo_env,
    )
    doc = read_report(out)
    validate_report(doc)
    assert doc["model"] == "cnn1d"  # (channels, length) -> cnn1d
    assert "cnn1d (3, 32) -> 5 classes" in text
    assert len(doc["devices"]) == 6
    assert doc["best_accuracy"] >= 0.5, doc["timeline"][-3:]  # chance is 0.2
