"""accuracy.png, the progress display, teardown and the data rule."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pytest

from fleet.demo.data import model_for_shape, scan_data_dir
from fleet.demo.display import FleetSnapshot, Progress, format_bytes
from fleet.demo.plot import plot_accuracy
from fleet.demo.report import EvalPoint
from fleet.demo.teardown import Teardown, free_port, port_is_free
from protocol.errors import DataError


def test_plot_draws_both_runs_small_png(tmp_path: Path) -> None:
    runs = {
        "fedavg": [EvalPoint(5.0 * i, i, min(0.1 * i, 0.95), 0.0, 10_000 * i) for i in range(12)],
        "fedasync": [EvalPoint(2.0 * i, i, min(0.15 * i, 0.95), 0.0, 4_000 * i) for i in range(12)],
    }
    path = plot_accuracy(runs, tmp_path / "accuracy.png", target=0.9)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 150_000


def test_plain_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    snap = FleetSnapshot(
        t_s=12.0,
        duration_s=180.0,
        version=7,
        accuracy=0.8123,
        best_accuracy=0.82,
        target_accuracy=0.9,
        accepted=30,
        rejected={"stale": 2},
        uplink_bytes=123_456,
        devices={"training": 3, "offline": 1},
    )
    with Progress("demo", file=out, line_every_s=0.0) as progress:
        progress.update(snap)
    text = out.getvalue()
    assert "v7" in text and "acc 0.812" in text and "accepted 30 rejected 2" in text
    assert "training=3" in text and "offline=1" in text and "123.5 kB" in text


def test_format_bytes() -> None:
    assert format_bytes(999) == "999 B"
    assert format_bytes(1_500) == "1.5 kB"
    assert format_bytes(2_340_000) == "2.3 MB"


def test_teardown_runs_newest_first_and_survives_a_failing_stop() -> None:
    calls: list[str] = []

    def boom() -> None:
        calls.append("b")
        raise RuntimeError("stuck")

    td = Teardown()
    td.add("a", lambda: calls.append("a"))
    td.add("b", boom)
    td.add("c", lambda: calls.append("c"))
    assert td.close() == ["b"]
    assert calls == ["c", "b", "a"]
    assert len(td) == 0
    assert td.close() == []  # idempotent


def test_port_is_free_sees_a_listener() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not port_is_free(port)
    assert port_is_free(port)


@pytest.mark.parametrize(
    ("shape", "model"),
    [((64,), "mlp"), ((3, 32), "cnn1d"), ((1, 8, 8), "cnn2d"), ((2, 2, 2, 2), "mlp")],
)
def test_model_follows_the_data(shape: tuple[int, ...], model: str) -> None:
    assert model_for_shape(shape) == model


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)


def test_scan_data_dir_reads_shape_and_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        _npz(
            tmp_path / f"d{i}" / "train.npz",
            rng.random((5, 3, 16), np.float32),
            np.array([0, 1, 2, 3, i], np.int64),
        )
    _npz(tmp_path / "test.npz", rng.random((4, 3, 16), np.float32), np.array([0, 4, 1, 2]))
    data = scan_data_dir(tmp_path)
    assert data.input_shape == (3, 16)
    assert data.num_classes == 5
    assert len(data.device_folders) == 3


@pytest.mark.parametrize(
    ("x", "y", "needle"),
    [
        (np.zeros((4, 3, 15), np.float32), np.zeros(4, np.int64), "differs"),
        (np.zeros((4, 3, 16), np.float64), np.zeros(4, np.int64), "float32"),
        (np.zeros((4, 3, 16), np.float32), np.zeros(4, np.float32), "int64"),
        (np.full((4, 3, 16), np.nan, np.float32), np.zeros(4, np.int64), "finite"),
    ],
)
def test_scan_data_dir_refuses(tmp_path: Path, x: np.ndarray, y: np.ndarray, needle: str) -> None:
    _npz(tmp_path / "d0" / "train.npz", np.zeros((4, 3, 16), np.float32), np.arange(4))
    _npz(tmp_path / "d1" / "train.npz", x, y)
    _npz(tmp_path / "test.npz", np.zeros((4, 3, 16), np.float32), np.arange(4))
    with pytest.raises(DataError, match=needle):
        scan_data_dir(tmp_path)


def test_scan_data_dir_needs_the_server_test_set(tmp_path: Path) -> None:
    _npz(tmp_path / "d0" / "train.npz", np.zeros((4, 8), np.float32), np.arange(4))
    with pytest.raises(DataError, match=r"test\.npz"):
        scan_data_dir(tmp_path)
