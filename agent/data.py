"""A device's local data: `<folder>/train.npz` (required) and `test.npz` (optional).

Each holds `x` (float32, (n, *manifest.input_shape)) and `y` (int64, (n,), labels in
[0, num_classes)). Checked cheapest-first; every error names the file and the problem.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.errors import DataError
from protocol.manifest import Manifest

__all__ = ["TEST_FILE", "TRAIN_FILE", "DeviceData", "load_device_data", "load_split"]

TRAIN_FILE = "train.npz"
TEST_FILE = "test.npz"


@dataclass(frozen=True)
class DeviceData:
    train_x: np.ndarray  # (n, *input_shape) float32
    train_y: np.ndarray  # (n,) int64
    test_x: np.ndarray | None
    test_y: np.ndarray | None

    @property
    def num_train(self) -> int:
        return int(self.train_y.shape[0])


def load_split(path: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one .npz file; returns (x, y)."""
    try:
        # allow_pickle=False: object arrays in an .npz would run code on load.
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            for key in ("x", "y"):
                if key not in names:
                    raise DataError(f"{path}: array {key!r} missing (has {sorted(names)})")
            x = npz["x"]
            y = npz["y"]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz of plain arrays: {exc}") from exc
    if x.dtype != np.float32:
        raise DataError(f"{path}: x has dtype {x.dtype}, expected float32")
    if y.dtype != np.int64:
        raise DataError(f"{path}: y has dtype {y.dtype}, expected int64")
    if x.ndim == 0 or x.shape[1:] != manifest.input_shape:
        expected = ", ".join(map(str, manifest.input_shape))
        raise DataError(f"{path}: x has shape {x.shape}, expected (n, {expected})")
    if y.shape != (x.shape[0],):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({x.shape[0]},) to match x")
    if x.shape[0] == 0:
        raise DataError(f"{path}: no samples")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= manifest.num_classes:
        raise DataError(
            f"{path}: labels span [{lo}, {hi}], outside [0, {manifest.num_classes - 1}]"
        )
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def load_device_data(folder: Path, manifest: Manifest) -> DeviceData:
    folder = Path(folder)
    train_x, train_y = load_split(folder / TRAIN_FILE, manifest)
    test_path = folder / TEST_FILE
    if test_path.exists():
        test_x, test_y = load_split(test_path, manifest)
        return DeviceData(train_x, train_y, test_x, test_y)
    return DeviceData(train_x, train_y, None, None)
