"""Test helpers: exported artifacts (once per session) and small real data sets.

    exported_artifacts("mlp", (64,), 10, seed=0) -> Path     # cached per process, keyed by args
    digits_arrays((64,)) | digits_arrays((1, 8, 8))           # sklearn digits, fixed split
    sensor_arrays(...)                                        # generated accelerometer-like windows

Export imports torch, so call `exported_artifacts` from tests, never from agent code under test.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["digits_arrays", "exported_artifacts", "sensor_arrays"]

_lock = threading.Lock()
_root: Path | None = None


def _cache_root() -> Path:
    global _root  # noqa: PLW0603  # one temp folder per test process, removed at exit
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="fleetlearn-artifacts-"))
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    return _root


@functools.cache
def _export(
    model: str,
    input_shape: tuple[int, ...],
    classes: int,
    seed: int,
    optimizer: str,
    learning_rate: float | None,
    hidden: tuple[int, ...] | None,
    trainable: str,
    momentum: float,
) -> Path:
    from models.export import export_artifacts  # torch: test side only
    from models.local_optimizer import default_learning_rate

    shape, widths = "x".join(map(str, input_shape)), "x".join(map(str, hidden or ()))
    key = (
        f"{model}-{shape}-{classes}-{seed}-{optimizer}-{learning_rate}-{widths}-{trainable}"
        f"-{momentum}"
    )
    out = _cache_root() / key
    export_artifacts(
        model,
        input_shape,
        classes,
        out,
        seed=seed,
        learning_rate=default_learning_rate(optimizer) if learning_rate is None else learning_rate,
        optimizer=optimizer,
        hidden=hidden,
        trainable=trainable,
        momentum=momentum,
    )
    return out


def exported_artifacts(
    model: str = "mlp",
    input_shape: tuple[int, ...] = (64,),
    classes: int = 10,
    seed: int = 0,
    *,
    optimizer: str = "adamw",
    learning_rate: float | None = None,
    hidden: tuple[int, ...] | None = None,
    trainable: str = "all",
    momentum: float = 0.0,
) -> Path:
    """An artifacts folder for these arguments, exported once per test process. Do not modify it
    (copy it with shutil.copytree first if a test must corrupt files)."""
    with _lock:
        return _export(
            model,
            tuple(input_shape),
            classes,
            seed,
            optimizer,
            learning_rate,
            hidden,
            trainable,
            momentum,
        )


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # ships inside the wheel: no download

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
    y = data.target.astype(np.int64)  # (1797,)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1437], order[1437:]  # fixed 80/20 split
    return x[train], y[train], x[test], y[test]


def digits_arrays(
    input_shape: tuple[int, ...] = (64,),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 1437 / 360 real 8x8 digits, x float32 in [0, 1]
    reshaped to (n, *input_shape) — (64,) for mlp, (1, 8, 8) for cnn2d — and y int64."""
    x_train, y_train, x_test, y_test = _digits()
    return (
        x_train.reshape((-1, *input_shape)).copy(),
        y_train.copy(),
        x_test.reshape((-1, *input_shape)).copy(),
        y_test.copy(),
    )


def sensor_arrays(
    n: int = 600, channels: int = 3, length: int = 32, classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generated accelerometer-like windows: class c is a sine of frequency (c + 1) cycles per
    window on a random channel mix, random phase, plus Gaussian noise. x: (n, channels, length)
    float32, y: (n,) int64."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n).astype(np.int64)  # (n,)
    t = np.arange(length, dtype=np.float64) / length  # (length,)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))  # (n, 1)
    wave = np.sin(2 * np.pi * (y[:, None] + 1) * t[None, :] + phase)  # (n, length)
    mix = rng.uniform(0.5, 1.5, size=(n, channels, 1))  # (n, channels, 1)
    noise = rng.normal(0, 0.3, size=(n, channels, length))
    x = (mix * wave[:, None, :] + noise).astype(np.float32)  # (n, channels, length)
    return x, y
