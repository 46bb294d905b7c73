"""Export a model to a self-contained artifacts folder that stock ONNX Runtime trains.

    <out>/train_step.onnx   one training step, default ONNX domain only (models/step_graph.py)
          forward.onnx      (trainable..., frozen..., input) -> logits, for evaluation
          inference.onnx    input -> logits, weights as named initializers (apps, the server)
          initial_weights.npy   (num_params,) float32: the trainable parameters, manifest order
          frozen_weights.npy    (num_frozen,) float32: frozen parameters and buffers
          manifest.json     written last; the sha256 of every file above

`export_module` takes any torch module whose forward maps one (batch, *input_shape) float32
tensor to (batch, classes) logits, plus the names of the parameters that train; `export_artifacts`
builds a zoo model and calls it. Only trainable parameters are in the flat vector that offers
and updates carry; the manifest lists both sets.

Choices (and why):
- **Flat order = the module's parameter order** restricted to the trainable ones; the step graph's
  inputs are named after the parameters, so the order is the one we chose, not one we measure.
- **Determinism.** torch is seeded and the exporters are deterministic, so every file is
  byte-identical for the same arguments and toolchain, and so is the manifest digest. The
  toolchain versions are recorded in `manifest.extra` (a different toolchain is a different model
  id, which is honest).
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.local_optimizer import DEFAULT_OPTIMIZER, default_learning_rate
from models.optimizers import OPTIMIZERS, OptimizerSpec
from models.step_graph import OPSET, export_step_graphs, frozen_tensors, inference_graph
from models.trainable import resolve_trainable
from models.zoo import MODEL_NAMES, build_model
from protocol.artifacts import (
    FORWARD_MODEL,
    FROZEN_WEIGHTS,
    INFERENCE_MODEL,
    INITIAL_WEIGHTS,
    MANIFEST_FILE,
    TRAIN_STEP_MODEL,
    sha256_hex,
)
from protocol.manifest import Manifest, ParamSpec, encode_manifest

__all__ = [
    "INPUT_NAME",
    "OPTIMIZERS",
    "export_artifacts",
    "export_module",
]

log = logging.getLogger(__name__)

INPUT_NAME = "input"


def _npy(flat: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, flat, allow_pickle=False)
    return buf.getvalue()


def _flat(tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    parts = [t.detach().to(torch.float32).numpy().ravel() for t in tensors.values()]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)  # (n,) float32


def export_module(
    module: nn.Module,
    out_dir: Path,
    *,
    model_name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    trainable: Sequence[str],
    optimizer: OptimizerSpec,
    learning_rate: float | None = None,
    extra: dict[str, Any] | None = None,
    input_dtype: str = "float32",
    tokenizer: tuple[str, bytes] | None = None,
) -> Manifest:
    """Export `module` (weights as they are now) into `out_dir` (created); return the manifest.

    `trainable`: parameter names that train (see models/trainable.py); everything else is frozen.
    `input_dtype`: float32, or int64 for token ids, whose `tokenizer` (file name, bytes) is
    written beside the graphs and hashed in the manifest like them.
    """
    if learning_rate is None:
        learning_rate = default_learning_rate(optimizer.name)
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate must be positive, got {learning_rate}")
    input_shape = tuple(int(d) for d in input_shape)
    params = dict(module.named_parameters())
    trainable = list(trainable)
    dtype = {"float32": torch.float32, "int64": torch.int64}[input_dtype]
    sample = torch.zeros((2, *input_shape), dtype=dtype)  # (batch, *input_shape)
    graphs = export_step_graphs(module, sample, trainable, optimizer, INPUT_NAME)
    train_t = {n: params[n] for n in trainable}
    frozen_t = frozen_tensors(module, trainable)
    for name, t in frozen_t.items():
        if t.dtype != torch.float32:
            raise ValueError(f"frozen tensor {name} is {t.dtype}; only float32 is supported")
    values = {n: t.detach().numpy() for n, t in (train_t | frozen_t).items()}
    files = {
        TRAIN_STEP_MODEL: graphs.train_step,
        FORWARD_MODEL: graphs.forward,
        INFERENCE_MODEL: inference_graph(graphs.forward, values),
        INITIAL_WEIGHTS: _npy(_flat(train_t)),
        FROZEN_WEIGHTS: _npy(_flat(frozen_t)),
    }
    if tokenizer is not None:
        files[tokenizer[0]] = tokenizer[1]
    manifest = Manifest(
        model_name=model_name,
        params=tuple(ParamSpec(n, tuple(t.shape)) for n, t in train_t.items()),
        input_name=INPUT_NAME,
        input_shape=input_shape,
        num_classes=num_classes,
        loss="cross_entropy",
        optimizer=optimizer.name,
        learning_rate=float(learning_rate),
        files={name: sha256_hex(data) for name, data in files.items()},
        extra={
            **(extra or {}),
            "optimizer": optimizer.describe(),
            "optimizer_state": {k: list(v) for k, v in graphs.state_shapes.items()},
            "opset": OPSET,
            "onnx": importlib.metadata.version("onnx"),
            "onnxscript": importlib.metadata.version("onnxscript"),
            "torch": torch.__version__,
        },
        frozen=tuple(ParamSpec(n, tuple(t.shape)) for n, t in frozen_t.items()),
        input_dtype=input_dtype,
        tokenizer=tokenizer[0] if tokenizer is not None else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        _write_atomic(out_dir / name, data)
    _write_atomic(out_dir / MANIFEST_FILE, encode_manifest(manifest))  # last: marks the folder done
    log.info(
        "exported %s (%d trainable, %d frozen parameters) to %s",
        model_name,
        manifest.num_params,
        manifest.num_frozen,
        out_dir,
    )
    return manifest


def export_artifacts(
    model: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    out_dir: Path,
    seed: int = 0,
    learning_rate: float | None = None,
    *,
    optimizer: str = DEFAULT_OPTIMIZER,
    hidden: tuple[int, ...] | None = None,
    trainable: str = "all",
    momentum: float = 0.0,
    weight_decay: float | None = None,
) -> Manifest:
    """Build zoo `model` (seeded), export its artifacts into `out_dir` and return the manifest.

    `optimizer`: sgd (the default for federated training, models/local_optimizer.py) or adamw;
    `learning_rate` None: that optimizer's default rate (sgd 0.3, adamw 1e-3).
    `trainable`: all | head | module names (models/trainable.py). `momentum` (sgd) and
    `weight_decay` (None: torch's default for the optimizer) are baked into the step graph.
    """
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")
    spec = OptimizerSpec(
        optimizer, momentum=momentum, weight_decay=-1.0 if weight_decay is None else weight_decay
    )
    torch.manual_seed(seed)
    net = build_model(model, tuple(input_shape), num_classes, hidden)
    names = resolve_trainable(net, trainable)
    return export_module(
        net,
        out_dir,
        model_name=model,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        trainable=names,
        optimizer=spec,
        learning_rate=learning_rate,
        extra={
            "seed": seed,
            "hidden": list(hidden) if hidden is not None else None,
            "trainable": trainable,
        },
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
