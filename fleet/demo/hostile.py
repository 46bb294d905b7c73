"""A hostile demo device: a real agent whose trainer is compromised (`--attackers --attack`).

The agent, its codec, outbox and MQTT client are the production ones; only what it trains on and
the weights it reports change (fleet/attacks.py), so what reaches the server is exactly what a
compromised device could publish on its own update topic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.trainer import EvalResult, TrainConfig, TrainResult, never_stop
from fleet.attacks import Attack

__all__ = ["HostileTrainer"]


class HostileTrainer:
    """Wraps a trainer: poisons the local data, then the delta (weights - base) it reports."""

    def __init__(self, inner: Any, attack: Attack, device: int) -> None:
        self._inner = inner
        self.attack = attack
        self.device = device
        self.rounds = 0
        self.name = inner.name
        self.manifest = inner.manifest
        self._base: np.ndarray | None = None

    def set_weights(self, flat: np.ndarray) -> None:
        self._base = np.asarray(flat, np.float32).copy()
        self._inner.set_weights(flat)

    def get_weights(self) -> np.ndarray:
        weights: np.ndarray = self._inner.get_weights()
        return weights

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = never_stop,
    ) -> TrainResult:
        base = self._base if self._base is not None else self._inner.get_weights()
        px, py = self.attack.poison_data(x, y)
        result: TrainResult = self._inner.train(px, py, config, should_stop)
        self.rounds += 1
        delta = self.attack.poison_delta(result.weights - base, self.device, self.rounds)
        return dataclasses.replace(result, weights=(base + delta).astype(np.float32))

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        result: EvalResult = self._inner.evaluate(x, y, batch_size)
        return result
