"""Local datasets for simulated devices: scikit-learn's digits split non-IID by a Dirichlet draw.

A device folder holds `train.npz` (x float32, y int64) and optionally `test.npz`, exactly what a
real device's data folder holds (agent/data.py reads it). The held-out server test set is
`<root>/test.npz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "digits_dataset",
    "dirichlet_partition",
    "load_data_dir",
    "write_device_folders",
]


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (n, *input_shape) float32
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def digits_dataset(seed: int = 0, test_fraction: float = 0.2, image: bool = False) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits (shipped in the wheel: no download).

    Pixels scaled to [0, 1]; `image=True` gives (n, 1, 8, 8) for cnn2d, else (n, 64).
    """
    from sklearn.datasets import load_digits  # demo/dev extra only

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (1797, 64)
    y = digits.target.astype(np.int64)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test], 10)


def dirichlet_partition(
    labels: np.ndarray, num_devices: int, alpha: float, seed: int = 0, min_size: int = 8
) -> list[np.ndarray]:
    """Split sample indices across devices with per-class Dirichlet(alpha) proportions.

    Small alpha gives each device few classes (non-IID); large alpha approaches IID. When devices
    outnumber what the data can give `min_size` samples each, slices are reused: device i gets
    partition i % P of P = len(labels) // min_size partitions (stated in the returned order).

    Every partition gets at least min(min_size, len(labels) // P) >= 1 samples: a draw is
    redrawn up to 100 times, and when even the best draw leaves a partition short (very small
    alpha, many devices), samples move to it from the largest partitions, preferring the class
    it already holds most of, so the skew of the draw is kept. Never an empty slice.
    """
    if num_devices < 1 or alpha <= 0:
        raise ValueError("num_devices must be >= 1 and alpha > 0")
    if len(labels) < 1:
        raise ValueError("dirichlet_partition: no samples to split")
    rng = np.random.default_rng(seed)
    n_parts = max(1, min(num_devices, len(labels) // max(min_size, 1)))
    floor = max(1, min(min_size, len(labels) // n_parts))
    classes = np.unique(labels)
    best: list[list[int]] | None = None
    for _ in range(100):  # redraw until every partition has at least `floor` samples
        parts: list[list[int]] = [[] for _ in range(n_parts)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_parts, alpha))) * len(idx)).astype(int)
            for p, chunk in enumerate(np.split(idx, cuts[:-1])):
                parts[p].extend(chunk.tolist())
        if best is None or min(map(len, parts)) > min(map(len, best)):
            best = parts
        if min(map(len, best)) >= floor:
            break
    assert best is not None
    _top_up(best, labels, floor)
    slices = [np.sort(np.asarray(p, dtype=np.int64)) for p in best]
    return [slices[i % n_parts] for i in range(num_devices)]


def _top_up(parts: list[list[int]], labels: np.ndarray, floor: int) -> None:
    """Move samples into partitions below `floor` from the largest ones (in place)."""
    for p in sorted(range(len(parts)), key=lambda i: len(parts[i])):
        while len(parts[p]) < floor:
            own = labels[parts[p]]  # (size,) the classes this partition already holds
            wanted = int(np.bincount(own).argmax()) if len(own) else None
            donors = [d for d in range(len(parts)) if len(parts[d]) > floor]
            holding = [d for d in donors if wanted in labels[parts[d]]]
            donor = max(holding or donors, key=lambda d: len(parts[d]))
            theirs = labels[parts[donor]]  # (size,)
            c = wanted if holding else int(np.bincount(theirs).argmax())
            parts[p].append(parts[donor].pop(int(np.flatnonzero(theirs == c)[-1])))


def write_device_folders(
    root: Path, dataset: Dataset, partitions: list[np.ndarray], local_test_fraction: float = 0.2
) -> list[Path]:
    """Write `root/device-XXXX/{train,test}.npz` and the server's `root/test.npz`."""
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "test.npz", x=dataset.x_test, y=dataset.y_test)
    folders = []
    for i, idx in enumerate(partitions):
        folder = root / f"device-{i:04d}"
        folder.mkdir(exist_ok=True)
        n_test = int(len(idx) * local_test_fraction)
        np.savez(
            folder / "train.npz", x=dataset.x_train[idx[n_test:]], y=dataset.y_train[idx[n_test:]]
        )
        if n_test:
            np.savez(
                folder / "test.npz",
                x=dataset.x_train[idx[:n_test]],
                y=dataset.y_train[idx[:n_test]],
            )
        folders.append(folder)
    return folders


def load_data_dir(root: Path) -> tuple[list[Path], Path]:
    """A user's `--data DIR`: device folders holding train.npz, plus DIR/test.npz for the server."""
    folders = sorted(p for p in root.iterdir() if (p / "train.npz").is_file())
    test = root / "test.npz"
    if not folders:
        raise FileNotFoundError(f"{root}: no device folders with train.npz")
    if not test.is_file():
        raise FileNotFoundError(f"{root}/test.npz: the server's held-out test set is missing")
    return folders, test
