"""Local training for simulated devices: one shared trainer, re-pointed at each device in turn.

Real training (the production ORT backend) on the device's own slice, but one trainer object for
the whole fleet: `set_weights(base) -> train(slice) -> get_weights()` costs milliseconds on the
digits MLP, so thousands of devices fit on two cores. The virtual duration of that training comes
from the device profile, not from the wall clock.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

__all__ = ["LocalBudget", "LocalTrainer", "SharedTrainer"]


@dataclasses.dataclass(frozen=True)
class LocalBudget:
    max_samples: int = 32  # a few dozen samples per session keeps real training ~ms each
    epochs: int = 1
    batch_size: int = 8  # a few optimizer steps per session rather than one

    def __post_init__(self) -> None:
        if self.max_samples < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("local budget values must be >= 1")


class LocalTrainer(Protocol):
    """What the simulator needs from a training backend."""

    def local_update(
        self, base: np.ndarray, x: np.ndarray, y: np.ndarray, budget: LocalBudget, seed: int
    ) -> tuple[np.ndarray, int]:
        """(new weights (n,) float32, optimizer steps taken) after training from `base`."""
        ...

    def accuracy(self, weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float: ...


class SharedTrainer:
    """Adapts an `agent.trainer.Trainer` (ORT in production) to `LocalTrainer`."""

    def __init__(self, trainer: object) -> None:
        from agent.trainer import TrainConfig  # the production config type

        self._trainer = trainer
        self._config_type = TrainConfig
        self.name: str = str(getattr(trainer, "name", "?"))

    def local_update(
        self, base: np.ndarray, x: np.ndarray, y: np.ndarray, budget: LocalBudget, seed: int
    ) -> tuple[np.ndarray, int]:
        t = self._trainer
        config = self._config_type(epochs=budget.epochs, batch_size=budget.batch_size, seed=seed)
        t.set_weights(base)  # type: ignore[attr-defined]
        result = t.train(x, y, config)  # type: ignore[attr-defined]
        return np.asarray(result.weights, np.float32), int(result.steps)

    def accuracy(self, weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        self._trainer.set_weights(weights)  # type: ignore[attr-defined]
        return float(self._trainer.evaluate(x, y).accuracy)  # type: ignore[attr-defined]

    def loss(self, weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy of `weights` on (x, y)."""
        self._trainer.set_weights(weights)  # type: ignore[attr-defined]
        return float(self._trainer.evaluate(x, y).loss)  # type: ignore[attr-defined]
