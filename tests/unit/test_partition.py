from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.partition import (
    digits_dataset,
    dirichlet_partition,
    load_data_dir,
    write_device_folders,
)


def test_partition_covers_every_sample_once_when_devices_are_few() -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_partition(labels, num_devices=10, alpha=0.5, seed=1)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(500))
    assert min(len(p) for p in parts) >= 8


def test_small_alpha_is_less_iid_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10), 100)

    def mean_classes(alpha: float) -> float:
        parts = dirichlet_partition(labels, 20, alpha, seed=3)
        return float(np.mean([len(np.unique(labels[p])) for p in parts]))

    assert mean_classes(0.1) < mean_classes(100.0)
    assert mean_classes(100.0) == pytest.approx(10, abs=0.5)


def test_devices_beyond_the_data_reuse_slices() -> None:
    labels = np.repeat(np.arange(4), 10)  # 40 samples, 5 partitions of >= 8
    parts = dirichlet_partition(labels, num_devices=12, alpha=1.0, seed=0)
    assert len(parts) == 12
    np.testing.assert_array_equal(parts[0], parts[5])


def test_folders_round_trip_through_load_data_dir(tmp_path: Path) -> None:
    data = digits_dataset(seed=0)
    parts = dirichlet_partition(data.y_train, 3, 1.0, seed=0)
    write_device_folders(tmp_path, data, parts)
    folders, test = load_data_dir(tmp_path)
    assert len(folders) == 3
    with np.load(folders[0] / "train.npz", allow_pickle=False) as f:
        assert f["x"].dtype == np.float32 and f["y"].dtype == np.int64
    with np.load(test, allow_pickle=False) as f:
        assert len(f["y"]) == len(data.y_test)


def test_low_alpha_with_many_devices_never_leaves_a_slice_empty() -> None:
    # 1,440 samples over 100 devices at alpha 0.1: most Dirichlet draws leave some device with
    # nothing (before the fix, 100 redraws failed and the last draw came back with empty slices)
    labels = np.repeat(np.arange(10), 144)
    parts = dirichlet_partition(labels, num_devices=100, alpha=0.1, seed=0, min_size=8)
    assert len(parts) == 100
    assert min(len(p) for p in parts) >= 8  # min(min_size, 1440 // 100) = 8
    joined = np.concatenate(parts)  # 100 distinct partitions: each sample on exactly one
    assert sorted(joined.tolist()) == list(range(1440))
    # topping up keeps the skew: a device still holds few classes
    assert np.mean([len(np.unique(labels[p])) for p in parts]) < 4


def test_topping_up_prefers_the_class_a_short_slice_already_holds() -> None:
    labels = np.repeat(np.arange(3), 60)  # 180 samples, 20 partitions, floor 8
    parts = dirichlet_partition(labels, num_devices=20, alpha=0.05, seed=2, min_size=8)
    assert min(len(p) for p in parts) >= 8
    # at alpha 0.05 nearly every device is one class, even after the top-up
    assert np.mean([len(np.unique(labels[p])) for p in parts]) < 1.5


def test_no_samples_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        dirichlet_partition(np.zeros(0, np.int64), 4, 0.5)
