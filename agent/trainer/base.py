"""The trainer backend interface: what the agent needs from any on-device training engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from protocol.errors import ConfigError, DataError, ProtocolError, Reason
from protocol.manifest import Manifest

__all__ = [
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "check_arrays",
    "check_weights",
    "never_stop",
    "proximal_step",
]


@dataclass(frozen=True)
class TrainConfig:
    """A local training budget.

    `steps` set: exactly that many optimizer steps (reshuffling each pass), `epochs` ignored.
    `steps` None: `epochs` full passes over the data. The last batch of a pass may be short.
    """

    epochs: int | None = 1  # one pass: the usual FedAvg local budget
    steps: int | None = None
    batch_size: int = 32  # fits every zoo model in a Pi-class device's cache
    prox_mu: float = 0.0  # FedProx proximal coefficient; 0 is plain local training
    seed: int = 0  # batch order; same seed + same data -> same batches

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ConfigError("TrainConfig: set epochs or steps")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"TrainConfig.steps must be >= 0, got {self.steps}")
        if self.epochs is not None and self.epochs < 0:
            raise ConfigError(f"TrainConfig.epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if not (self.prox_mu >= 0 and np.isfinite(self.prox_mu)):
            raise ConfigError(f"TrainConfig.prox_mu must be finite and >= 0, got {self.prox_mu}")


@dataclass(frozen=True)
class TrainResult:
    weights: np.ndarray  # (num_params,) float32, manifest order, a copy
    steps: int
    samples: int  # samples seen, counting repeats across passes
    mean_loss: float  # mean of per-step training losses (nan when no step ran)
    stopped_early: bool  # should_stop() said stop before the budget was spent
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy per sample
    accuracy: float
    macro_f1: float
    samples: int


def never_stop() -> bool:
    return False


class Trainer(Protocol):
    name: str  # "onnxruntime" | "torch" (benchmark only) | "fake" (tests)
    manifest: Manifest

    def set_weights(self, flat: np.ndarray) -> None: ...

    def get_weights(self) -> np.ndarray: ...

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = never_stop,
    ) -> TrainResult:
        """Train from the current weights; should_stop() is checked before every step.

        Raises DataError for bad arrays, or if the loss turns non-finite (weights restored).
        """
        ...

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult: ...


def check_arrays(manifest: Manifest, x: np.ndarray, y: np.ndarray) -> None:
    """x: (n, *input_shape) of the manifest's input dtype (float32, or int64 token ids >= 0),
    y: (n,) int64 in [0, num_classes), n >= 1."""
    if x.dtype != np.dtype(manifest.input_dtype) or y.dtype != np.int64:
        raise DataError(
            f"x must be {manifest.input_dtype} and y int64, got {x.dtype} and {y.dtype}"
        )
    if x.shape[1:] != manifest.input_shape or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise DataError(
            f"x {x.shape} / y {y.shape} do not match (n, *{manifest.input_shape}) / (n,), n >= 1"
        )
    if int(y.min()) < 0 or int(y.max()) >= manifest.num_classes:
        raise DataError(f"labels outside [0, {manifest.num_classes - 1}]")
    if x.dtype == np.int64 and int(x.min()) < 0:
        raise DataError("token ids must be >= 0")


def check_weights(manifest: Manifest, flat: np.ndarray) -> None:
    """A flat weight vector a trainer may load: the manifest's shape and dtype, all finite."""
    manifest.check_flat(flat)
    if not np.isfinite(flat).all():
        raise ProtocolError(Reason.NON_FINITE, "weights hold NaN or infinity")


def proximal_step(
    weights: np.ndarray,
    anchor: np.ndarray,
    learning_rate: float,
    mu: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """FedProx after an optimizer step: w0 + (w - w0) / (1 + lr * mu), into `out` (may be
    `weights`: the step then runs in place) or a new array.

    The exact proximal operator of (mu / 2) * ||w - w0||^2 at step size lr; it never overshoots
    the anchor w0 (the offer's weights) for any mu >= 0. Why it is a step and not a loss term:
    see agent/trainer/ort_step.py's docstring.
    """
    shrink = np.float32(1.0 / (1.0 + learning_rate * mu))
    if out is None:
        out = np.empty_like(weights)
    np.subtract(weights, anchor, out=out)  # (num_params,) float32
    out *= shrink
    out += anchor
    return out
