"""A device's local data: `<folder>/train.npz` (required) and `test.npz` (optional).

Each holds `x` ((n, *manifest.input_shape), the manifest's input dtype: float32, or int64 token
ids) and `y` (int64, (n,), labels in [0, num_classes)). Checked cheapest-first; every error names
the file and the problem. A text model (`manifest.tokenizer` set) reads `train.jsonl` /
`test.jsonl` instead when the folder has no .npz: raw text, tokenised here (agent/text_data.py).
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
    train_x: np.ndarray  # (n, *input_shape) float32 (or int64 token ids)
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
    if x.dtype != np.dtype(manifest.input_dtype):
        raise DataError(f"{path}: x has dtype {x.dtype}, expected {manifest.input_dtype}")
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
    if x.dtype == np.int64 and int(x.min()) < 0:
        raise DataError(f"{path}: token ids must be >= 0")
    if x.dtype == np.float32 and not np.isfinite(x).all():
        raise DataError(f"{path}: x holds {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def load_device_data(
    folder: Path, manifest: Manifest, artifacts_dir: Path | None = None
) -> DeviceData:
    """The folder's .npz files; for a text model without them, its .jsonl files tokenised with
    the tokenizer in `artifacts_dir` (verified with the rest of the artifacts)."""
    folder = Path(folder)
    if manifest.tokenizer is not None and not (folder / TRAIN_FILE).exists():
        if artifacts_dir is None:
            raise DataError(f"{folder}: a text model needs its artifacts folder for the tokenizer")
        return _load_text(folder, manifest, Path(artifacts_dir) / manifest.tokenizer)
    train_x, train_y = load_split(folder / TRAIN_FILE, manifest)
    test_path = folder / TEST_FILE
    if test_path.exists():
        test_x, test_y = load_split(test_path, manifest)
        return DeviceData(train_x, train_y, test_x, test_y)
    return DeviceData(train_x, train_y, None, None)


def _load_text(folder: Path, manifest: Manifest, tokenizer_path: Path) -> DeviceData:
    from agent.text_data import TEXT_TEST_FILE, TEXT_TRAIN_FILE, TextTokenizer, load_text_split

    if len(manifest.input_shape) != 1 or manifest.input_dtype != "int64":
        raise DataError(f"model {manifest.model_name}: a tokenizer needs input (max_length,) int64")
    tokenizer = TextTokenizer(tokenizer_path, manifest.input_shape[0])
    train_x, train_y = load_text_split(folder / TEXT_TRAIN_FILE, tokenizer, manifest.num_classes)
    test_path = folder / TEXT_TEST_FILE
    if test_path.exists():
        test_x, test_y = load_text_split(test_path, tokenizer, manifest.num_classes)
        return DeviceData(train_x, train_y, test_x, test_y)
    return DeviceData(train_x, train_y, None, None)
