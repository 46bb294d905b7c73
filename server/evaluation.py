"""Evaluate the global model on a held-out test.npz with plain ONNX Runtime inference.

`inference.onnx` (from the artifacts folder) is the forward graph whose initializers are named as
the manifest's parameters. Each evaluation overrides those initializers with the current flat
weights through `SessionOptions.add_initializer` (no onnx package, no torch, no training API),
runs batched inference, and reports accuracy, macro-F1 and mean cross-entropy.

test.npz holds `x` (N, *input_shape) float32 and `y` (N,) integer labels; read with
allow_pickle=False (never unpickle a file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import DataError
from protocol.manifest import Manifest

__all__ = ["EvalResult", "Evaluator", "load_test_set", "macro_f1"]


@dataclass(frozen=True, slots=True)
class EvalResult:
    version: int
    accuracy: float
    macro_f1: float
    loss: float
    samples: int


def load_test_set(path: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle
            x, y = data["x"], data["y"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a test set with arrays 'x' and 'y': {exc}") from exc
    if x.shape[1:] != manifest.input_shape or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise DataError(
            f"{path}: x {x.shape} / y {y.shape} do not fit input shape {manifest.input_shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= manifest.num_classes:
        raise DataError(f"{path}: labels must be integers in [0, {manifest.num_classes})")
    if manifest.input_dtype == "int64":  # token ids of a text model
        if not np.issubdtype(x.dtype, np.integer) or (x.size and x.min() < 0):
            raise DataError(f"{path}: x must hold token ids (integers >= 0)")
        return x.astype(np.int64, copy=False), y.astype(np.int64)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN or infinity")
    return x, y.astype(np.int64)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over classes present in truth or prediction (sklearn's 'macro')."""
    f1s = []
    for c in range(num_classes):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


class Evaluator:
    def __init__(
        self,
        inference_model: Path,
        manifest: Manifest,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 512,
    ) -> None:
        self.model_bytes = inference_model.read_bytes()
        self.manifest = manifest
        self.x, self.y = x, y
        self.batch_size = batch_size

    def _session(self, weights: np.ndarray) -> Any:
        import onnxruntime as ort  # only servers that evaluate pay for it (and its log setup)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # evaluation must not starve the ingest thread
        opts.log_severity_level = 3
        self._values: list[Any] = []  # the OrtValues must outlive the session that borrows them
        for name, tensor in self.manifest.split(weights).items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tensor))
            self._values.append(value)
            opts.add_initializer(name, value)
        return ort.InferenceSession(self.model_bytes, opts, providers=["CPUExecutionProvider"])

    def evaluate(self, weights: np.ndarray, version: int) -> EvalResult:
        session = self._session(weights)
        input_name = session.get_inputs()[0].name
        logits = np.concatenate(
            [
                session.run(None, {input_name: self.x[i : i + self.batch_size]})[0]
                for i in range(0, len(self.x), self.batch_size)
            ]
        ).astype(np.float64)  # (N, classes)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(len(self.y)), self.y].mean())
        pred = logits.argmax(axis=1)
        return EvalResult(
            version=version,
            accuracy=float((pred == self.y).mean()),
            macro_f1=macro_f1(self.y, pred, self.manifest.num_classes),
            loss=loss,
            samples=len(self.y),
        )
