from pathlib import Path

import numpy as np
import pytest

from agent.data import load_device_data
from protocol.errors import DataError
from protocol.manifest import Manifest, ParamSpec

MANIFEST = Manifest("cnn2d", (ParamSpec("w", (2,)),), "input", (1, 2, 2), 3)


def _good() -> dict[str, np.ndarray]:
    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 1, 2, 2)
    return {"x": x, "y": np.array([0, 1, 2, 1, 0], np.int64)}


def _write(folder: Path, arrays: dict[str, np.ndarray], name: str = "train.npz") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / name, **arrays)  # type: ignore[arg-type]


def test_loads_train_and_optional_test(tmp_path: Path) -> None:
    _write(tmp_path, _good())
    data = load_device_data(tmp_path, MANIFEST)
    assert data.train_x.shape == (5, 1, 2, 2) and data.test_x is None and data.test_y is None
    _write(tmp_path, _good(), "test.npz")
    data = load_device_data(tmp_path, MANIFEST)
    assert data.test_y is not None and data.test_y.tolist() == [0, 1, 2, 1, 0]


def _bad(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = _good()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


X = _good()["x"]
NAN_X = X.copy()
NAN_X[2, 0, 1, 1] = np.nan
INF_X = X.copy()
INF_X[0, 0, 0, 0] = np.inf


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (_bad(x=None), "array 'x' missing"),
        (_bad(y=None), "array 'y' missing"),
        (_bad(x=X.astype(np.float64)), "x has dtype float64"),
        (_bad(y=np.array([0, 1, 2, 1, 0], np.int32)), "y has dtype int32"),
        (_bad(x=X.reshape(5, 4)), "x has shape (5, 4), expected (n, 1, 2, 2)"),
        (_bad(y=np.array([0, 1, 2], np.int64)), "y has shape (3,)"),
        (_bad(y=np.array([0, 1, 3, 1, 0], np.int64)), "labels span [0, 3], outside [0, 2]"),
        (_bad(y=np.array([0, -1, 2, 1, 0], np.int64)), "outside [0, 2]"),
        (_bad(x=NAN_X), "1 NaN or infinite"),
        (_bad(x=INF_X), "1 NaN or infinite"),
        (_bad(x=X[:0], y=np.zeros(0, np.int64)), "no samples"),
    ],
)
def test_bad_arrays_name_the_file_and_problem(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    _write(tmp_path, arrays)
    with pytest.raises(DataError) as err:
        load_device_data(tmp_path, MANIFEST)
    assert str(tmp_path / "train.npz") in str(err.value)
    assert message in str(err.value)


def test_bad_test_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path, _good())
    _write(tmp_path, _bad(y=np.array([9, 1, 2, 1, 0], np.int64)), "test.npz")
    with pytest.raises(DataError, match=r"test\.npz: labels"):
        load_device_data(tmp_path, MANIFEST)


def test_missing_or_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.npz: file not found"):
        load_device_data(tmp_path, MANIFEST)
    (tmp_path / "train.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"train\.npz: not a readable \.npz"):
        load_device_data(tmp_path, MANIFEST)


def test_pickled_object_arrays_are_never_loaded(tmp_path: Path) -> None:
    y = np.array([0, 1, 2, 1, 0], dtype=object)  # an object array is stored pickled
    _write(tmp_path, {"x": X, "y": y})
    with pytest.raises(DataError, match=r"not a readable \.npz of plain arrays"):
        load_device_data(tmp_path, MANIFEST)
