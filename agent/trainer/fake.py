"""A deterministic stand-in trainer for other components' unit tests (no ONNX Runtime).

Each step adds `step_delta` to every weight (or a given (num_params,) vector) and, if asked,
sleeps `step_seconds`, so tests can exercise stopping mid-training. It follows the same batch plan
as the real backends, so steps/samples counts match theirs. The per-step "loss" is
1 / (1 + steps taken so far by this trainer). `evaluate` predicts the most frequent label seen in
the last `train()` call (0 before any), a real if weak classifier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from agent.trainer.base import (
    EvalResult,
    TrainConfig,
    TrainResult,
    check_arrays,
    check_weights,
    never_stop,
    proximal_step,
)
from agent.trainer.batching import macro_f1, plan_batches
from protocol.manifest import Manifest

__all__ = ["FakeTrainer"]


class FakeTrainer:
    name = "fake"

    def __init__(
        self,
        manifest: Manifest,
        step_delta: float | np.ndarray = 0.01,
        step_seconds: float = 0.0,
        initial_weights: np.ndarray | None = None,
    ) -> None:
        self.manifest = manifest
        self._delta = np.broadcast_to(
            np.asarray(step_delta, dtype=np.float32), (manifest.num_params,)
        ).copy()  # (num_params,) float32
        self._step_seconds = step_seconds
        self._weights = np.zeros(manifest.num_params, dtype=np.float32)
        self._total_steps = 0
        self._majority = 0
        if initial_weights is not None:
            self.set_weights(initial_weights)

    def set_weights(self, flat: np.ndarray) -> None:
        check_weights(self.manifest, flat)
        self._weights = flat.copy()

    def get_weights(self) -> np.ndarray:
        return self._weights.copy()

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = never_stop,
    ) -> TrainResult:
        check_arrays(self.manifest, x, y)
        start = time.perf_counter()
        self._majority = int(np.bincount(y, minlength=self.manifest.num_classes).argmax())
        base = self._weights.copy()
        steps = samples = 0
        loss_sum = 0.0
        stopped = False
        batches = plan_batches(
            x.shape[0], config.batch_size, config.epochs, config.steps, config.seed
        )
        for idx in batches:
            if should_stop():
                stopped = True
                break
            if self._step_seconds:
                time.sleep(self._step_seconds)
            self._weights += self._delta
            if config.prox_mu > 0:  # the same proximal step as the ORT backend
                self._weights = proximal_step(
                    self._weights, base, self.manifest.learning_rate, config.prox_mu
                )
            self._total_steps += 1
            loss_sum += 1.0 / (1 + self._total_steps)
            steps += 1
            samples += len(idx)
        return TrainResult(
            weights=self.get_weights(),
            steps=steps,
            samples=samples,
            mean_loss=loss_sum / steps if steps else math.nan,
            stopped_early=stopped,
            seconds=time.perf_counter() - start,
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        check_arrays(self.manifest, x, y)
        preds = np.full(y.shape, self._majority, dtype=np.int64)  # (n,)
        return EvalResult(
            loss=1.0 / (1 + self._total_steps),
            accuracy=float(np.mean(preds == y)),
            macro_f1=macro_f1(y, preds),
            samples=int(y.shape[0]),
        )
