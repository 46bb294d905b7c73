"""The fixed parts of an experiment: model artifacts, the shared trainer, data, fleets per seed.

Data: scikit-learn digits split non-IID by Dirichlet(alpha) (`fleet.partition`), or a user's
`--data DIR` of device folders. When devices outnumber what the data can give `min_slice` samples
each, slices are reused (device i gets slice i % P); with `--data`, device i gets folder i % F.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fleet.partition import digits_dataset, dirichlet_partition, load_data_dir
from fleet.sim.profiles import DeviceProfile, FleetConfig, Windows, make_fleet
from fleet.sim.trace import load_trace
from fleet.sim.training import SharedTrainer
from protocol.errors import ConfigError, DataError
from protocol.manifest import Manifest

__all__ = ["Arrays", "Setup", "World", "load_world", "prepare_trainer"]

log = logging.getLogger(__name__)

# (x_train, y_train, x_test, y_test): every device's slice indexes x_train / y_train
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Setup:
    devices: int = 1000
    alpha: float = 0.3
    min_slice: int = 32  # samples a slice should have; fewer distinct slices when devices abound
    data_dir: Path | None = None
    trace: Path | None = None
    fleet: FleetConfig = field(default_factory=FleetConfig)
    artifacts: Path | None = None  # exported model folder; None: export the digits MLP
    learning_rate: float = 0.01  # local AdamW rate when exporting (tuned for sync FedAvg)
    # the simulator's benchmarks (fleet, robustness, privacy) were measured with AdamW, so it
    # keeps it; a device export defaults to SGD (models/local_optimizer.py, benchmarks/parity.py)
    optimizer: str = "adamw"


@dataclass(frozen=True)
class World:
    data: Arrays
    slices: list[np.ndarray]
    fleet: list[DeviceProfile]
    distinct_slices: int


def prepare_trainer(setup: Setup, work_dir: Path) -> tuple[SharedTrainer, Manifest, np.ndarray]:
    """The production ORT trainer (one shared object, one thread) and the initial weights."""
    from agent.artifacts import load_artifacts
    from agent.trainer import load_trainer

    art = setup.artifacts
    if art is None:
        from models.export import export_artifacts  # build time: torch

        art = work_dir / "artifacts"
        shape = (64,) if setup.data_dir is None else _data_input_shape(setup.data_dir)
        export_artifacts(
            "mlp",
            shape,
            10,
            art,
            seed=0,
            learning_rate=setup.learning_rate,
            optimizer=setup.optimizer,
        )
    trainer = load_trainer(art, "onnxruntime", threads=1)  # 2 shared cores: one is plenty
    initial = load_artifacts(art).initial_weights.astype(np.float32)
    return SharedTrainer(trainer), trainer.manifest, initial


def _data_input_shape(root: Path) -> tuple[int, ...]:
    folders, _ = load_data_dir(root)
    x, _y = _load_npz(folders[0] / "train.npz")
    return tuple(int(d) for d in x.shape[1:])


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # allow_pickle=False: an object array in an .npz would run code on load.
        with np.load(path, allow_pickle=False) as npz:
            x, y = np.asarray(npz["x"]), np.asarray(npz["y"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not an .npz with arrays x and y ({exc})") from exc
    # x: float32 features, or int64 token ids of a text model (`fleetlearn smarthome --artifacts`)
    if x.dtype not in (np.float32, np.int64) or y.dtype != np.int64:
        raise DataError(f"{path}: need x float32 or int64 (n, ...) and y int64 (n,)")
    if x.shape[:1] != y.shape or y.ndim != 1:
        raise DataError(f"{path}: x {x.shape} and y {y.shape} disagree on n")
    if x.dtype == np.float32 and not np.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN or infinity")
    if x.dtype == np.int64 and x.size and int(x.min()) < 0:
        raise DataError(f"{path}: token ids must be >= 0")
    return x, y


def _load_dir(root: Path, devices: int) -> tuple[Arrays, list[np.ndarray], int]:
    folders, test = load_data_dir(root)
    xs, ys, slices = [], [], []
    offset = 0
    for folder in folders:
        x, y = _load_npz(folder / "train.npz")
        xs.append(x)
        ys.append(y)
        slices.append(np.arange(offset, offset + len(y)))
        offset += len(y)
    xt, yt = _load_npz(test)
    data = (np.concatenate(xs), np.concatenate(ys), xt, yt)
    return data, [slices[i % len(slices)] for i in range(devices)], len(slices)


def load_world(setup: Setup, duration_s: float, seed: int) -> World:
    """Data slices and a fleet for one seed (identical for every strategy of that seed)."""
    trace: list[Windows] | None = None
    devices = setup.devices
    if setup.trace is not None:
        names, trace = load_trace(setup.trace)
        if devices != len(names):
            log.info("trace %s names %d devices: the fleet has that many", setup.trace, len(names))
        devices = len(names)
    if devices < 1:
        raise ConfigError("--devices must be >= 1")
    if setup.data_dir is not None:
        data, slices, distinct = _load_dir(setup.data_dir, devices)
    else:
        d = digits_dataset(seed)
        data = (d.x_train, d.y_train, d.x_test, d.y_test)
        slices = dirichlet_partition(d.y_train, devices, setup.alpha, seed, setup.min_slice)
        distinct = len({id(s) for s in slices})
    fleet = make_fleet(devices, setup.fleet, duration_s, seed, trace)
    return World(data, slices, fleet, distinct)
