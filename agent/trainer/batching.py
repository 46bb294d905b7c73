"""Batch plans and metrics shared by every backend (pure numpy, no sklearn on the device)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["cross_entropy", "macro_f1", "plan_batches"]


def plan_batches(
    n: int, batch_size: int, epochs: int | None, steps: int | None, seed: int
) -> Iterator[np.ndarray]:
    """Index batches: a fresh seeded permutation per pass; `steps` (if set) caps the total.

    Same (n, batch_size, epochs, steps, seed) -> same batches, so backends can be compared.
    """
    rng = np.random.default_rng(seed)
    emitted = 0
    epoch = 0
    while (steps is None or emitted < steps) and (steps is not None or epoch < (epochs or 0)):
        order = rng.permutation(n)  # (n,) int64
        for start in range(0, n, batch_size):
            if steps is not None and emitted >= steps:
                return
            yield order[start : start + batch_size]
            emitted += 1
        epoch += 1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the labels present in y_true or y_pred (as scikit-learn)."""
    labels = np.union1d(y_true, y_pred)
    if labels.size == 0:
        return 0.0
    scores = []
    for c in labels:
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        scores.append(2 * tp / (2 * tp + fp + fn))  # > 0 denominator: c occurs somewhere
    return float(np.mean(scores))


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of (n, classes) logits against (n,) labels, computed in float64."""
    z = logits.astype(np.float64)  # (n, classes)
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())
