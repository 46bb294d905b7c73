"""A small real learner for simulator unit tests: softmax regression in numpy (no ORT, ~50 us)."""

from __future__ import annotations

import numpy as np

from fleet.sim.training import LocalBudget
from protocol.manifest import Manifest, ParamSpec

FEATURES, CLASSES = 64, 10
MANIFEST = Manifest(
    model_name="softmax",
    params=(ParamSpec("w", (CLASSES, FEATURES)), ParamSpec("b", (CLASSES,))),
    input_name="x",
    input_shape=(FEATURES,),
    num_classes=CLASSES,
)


def initial_weights() -> np.ndarray:
    return np.zeros(MANIFEST.num_params, np.float32)


class SoftmaxTrainer:
    """Plain minibatch SGD on a linear softmax classifier over the flat weight vector."""

    def __init__(self, lr: float = 0.5) -> None:
        self.lr = lr
        self.calls = 0

    def _split(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = flat[: CLASSES * FEATURES].reshape(CLASSES, FEATURES)  # (C, F)
        return w, flat[CLASSES * FEATURES :]  # (C,)

    def local_update(
        self, base: np.ndarray, x: np.ndarray, y: np.ndarray, budget: LocalBudget, seed: int
    ) -> tuple[np.ndarray, int]:
        self.calls += 1
        flat = base.astype(np.float32).copy()
        rng = np.random.default_rng(seed)
        steps = 0
        for _ in range(budget.epochs):
            order = rng.permutation(len(y))
            for i in range(0, len(y), budget.batch_size):
                idx = order[i : i + budget.batch_size]
                w, b = self._split(flat)
                logits = x[idx] @ w.T + b  # (B, C)
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(idx)), y[idx]] -= 1.0  # dL/dlogits
                gw = (p.T @ x[idx]) / len(idx)  # (C, F)
                gb = p.mean(axis=0)
                flat = flat - self.lr * np.concatenate([gw.ravel(), gb]).astype(np.float32)
                steps += 1
        return flat.astype(np.float32), steps

    def accuracy(self, weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        w, b = self._split(weights)
        return float(np.mean(np.argmax(x @ w.T + b, axis=1) == y))
