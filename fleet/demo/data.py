"""The demo's data: digits split non-IID across devices, or a user's `--data DIR`.

The model follows the data. One sample's shape (train.npz `x.shape[1:]`) picks the zoo model:

    (F,)          feature vector            -> mlp
    (C, L)        C channels of length L    -> cnn1d   (sensor windows)
    (C, H, W)     C planes of H x W         -> cnn2d   (small images)
    anything else                           -> mlp     (flattened)

`--model NAME` overrides the rule. Classes = 1 + the largest label in any train.npz or test.npz;
labels must be integers 0..K-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.partition import digits_dataset, dirichlet_partition, load_data_dir, write_device_folders
from protocol.errors import DataError

__all__ = [
    "SMARTHOME_MAX_LENGTH",
    "DemoData",
    "model_for_shape",
    "prepare_digits",
    "prepare_smarthome",
    "scan_data_dir",
]


@dataclass(frozen=True)
class DemoData:
    device_folders: tuple[Path, ...]
    test_file: Path  # the server's held-out test.npz
    input_shape: tuple[int, ...]
    num_classes: int


def model_for_shape(input_shape: tuple[int, ...]) -> str:
    return {1: "mlp", 2: "cnn1d", 3: "cnn2d"}.get(len(input_shape), "mlp")


def _read_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # allow_pickle=False: a data folder is untrusted input; never unpickle it.
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: expected an .npz with arrays x and y ({exc})") from exc
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise DataError(f"{path}: x must be (n, ...) and y (n,), n > 0; got {x.shape}, {y.shape}")
    # The agent's loader (agent/data.py) insists on these dtypes; say so before any agent starts.
    if y.dtype != np.int64 or int(y.min()) < 0:
        raise DataError(f"{path}: y must be int64 class labels >= 0, got {y.dtype}")
    if x.dtype != np.float32:
        raise DataError(f"{path}: x must be float32, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: x must be finite (found NaN or infinity)")
    return x, y


def scan_data_dir(root: Path) -> DemoData:
    """Check a user's data folder and read its shape and class count (all files must agree)."""
    try:
        folders, test = load_data_dir(root)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DataError(str(exc)) from exc
    shape: tuple[int, ...] | None = None
    top = 0
    for path in [*(f / "train.npz" for f in folders), test]:
        x, y = _read_xy(path)
        if shape is None:
            shape = tuple(int(d) for d in x.shape[1:])
        elif tuple(x.shape[1:]) != shape:
            raise DataError(f"{path}: sample shape {x.shape[1:]} differs from {shape}")
        top = max(top, int(y.max()))
    assert shape is not None  # load_data_dir guarantees at least one folder
    if top < 1:
        raise DataError(f"{root}: need at least 2 classes")
    return DemoData(tuple(folders), test, shape, top + 1)


def prepare_digits(root: Path, devices: int, alpha: float, seed: int) -> DemoData:
    """scikit-learn's digits as (64,) vectors, Dirichlet(alpha) non-IID over `devices` folders."""
    dataset = digits_dataset(seed=seed)
    parts = dirichlet_partition(dataset.y_train, devices, alpha, seed=seed)
    folders = write_device_folders(root, dataset, parts)
    return DemoData(tuple(folders), root / "test.npz", dataset.input_shape, dataset.num_classes)


SMARTHOME_MAX_LENGTH = 24  # tokens: a spoken command is ~10; longer ones are truncated


def prepare_smarthome(root: Path, devices: int, alpha: float, seed: int) -> DemoData:
    """Generated smart-home commands (fleet/smarthome.py), one household per device, as raw
    text: each agent tokenises its own train.jsonl. The server's test set is commands from
    households never seen in training; `tokenize_server_test` turns it into test.npz once the
    model (and so its tokenizer) is exported."""
    from fleet.smarthome import INTENTS, write_smarthome

    folders = write_smarthome(root, devices, alpha=alpha, seed=seed)
    return DemoData(tuple(folders), root / "test.npz", (SMARTHOME_MAX_LENGTH,), len(INTENTS))


def tokenize_server_test(data: DemoData, artifacts_dir: Path) -> None:
    """<root>/test.jsonl -> <root>/test.npz (x int64 token ids) with the model's own tokenizer."""
    from agent.artifacts import load_artifacts
    from agent.text_data import TextTokenizer, load_text_split

    manifest = load_artifacts(artifacts_dir).manifest
    if manifest.tokenizer is None:
        raise DataError(f"{artifacts_dir}: model {manifest.model_name} has no tokenizer")
    tokenizer = TextTokenizer(artifacts_dir / manifest.tokenizer, manifest.input_shape[0])
    x, y = load_text_split(data.test_file.with_suffix(".jsonl"), tokenizer, data.num_classes)
    np.savez(data.test_file, x=x, y=y)
