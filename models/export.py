"""Export a zoo model to a self-contained ONNX Runtime training artifacts folder.

    <out>/training_model.onnx eval_model.onnx optimizer_model.onnx inference.onnx
          checkpoint initial_weights.npy manifest.json

Choices (and why):
- **Nominal checkpoint.** `checkpoint` holds parameter names and shapes but no values. Weights have
  one source of truth: `initial_weights.npy` (hashed in the manifest) and after that every
  ModelOffer. A full checkpoint would ship every weight twice, and a trainer could silently start
  from stale checkpoint values instead of the offer. The trainer always sets weights after loading.
- **Flat order = ORT's contiguous buffer order**, measured here, not assumed: the full checkpoint is
  loaded into an ORT Module, the vector 0..n-1 is written with `copy_buffer_to_parameters` and each
  named parameter is read back to find its offset; the initial weights are then checked against
  `get_contiguous_parameters` of the full checkpoint. A mismatch aborts the export.
- **Determinism.** torch is seeded, the TorchScript exporter is deterministic, and onnxblock names
  nodes from a process-global counter (`onnx::loss::<n>`), so a second export in one process
  would differ by those names only; the counter is reset before each export. Every file is
  therefore byte-identical for the same arguments and toolchain, and so is the manifest digest.
  The toolchain versions are recorded in `manifest.extra` (a different toolchain is a different
  model id, which is honest).
- opset 15 and IR version <= 10 (ORT 1.19.2 refuses newer IR; FACTS.md).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.training import artifacts as ort_artifacts
from onnxruntime.training.api import CheckpointState, Module
from onnxruntime.training.onnxblock import _graph_utils

from models.zoo import MODEL_NAMES, build_model
from protocol.artifacts import (
    CHECKPOINT,
    EVAL_MODEL,
    INFERENCE_MODEL,
    INITIAL_WEIGHTS,
    MANIFEST_FILE,
    OPTIMIZER_MODEL,
    TRAINING_MODEL,
    sha256_hex,
)
from protocol.manifest import Manifest, ParamSpec, encode_manifest

__all__ = ["DEFAULT_LEARNING_RATE", "INPUT_NAME", "OPTIMIZERS", "export_artifacts"]

log = logging.getLogger(__name__)

INPUT_NAME = "input"
_OUTPUT_NAME = "logits"
_OPSET = 15  # decomposes LayerNorm into trainable primitives should a model ever use it
_MAX_IR_VERSION = 10  # ORT 1.19.2 loads IR <= 10
DEFAULT_LEARNING_RATE = 1e-3  # AdamW's usual default; SGD users pass their own
OPTIMIZERS = {"adamw": ort_artifacts.OptimType.AdamW, "sgd": ort_artifacts.OptimType.SGD}
_TORCHSCRIPT_DEPRECATED = "You are using the legacy TorchScript-based ONNX export"


def _onnx_bytes(model: torch.nn.Module, sample: torch.Tensor, training: bool) -> bytes:
    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    model.train(training)
    with warnings.catch_warnings():
        # The TorchScript exporter (and its `training=` argument) is deprecated, but it is the one
        # whose graphs ORT trains (FACTS.md). Silence only those deprecations: the legacy-export
        # one is attributed to this module (torch warns with a stacklevel), the rest to torch.onnx.
        warnings.filterwarnings("ignore", _TORCHSCRIPT_DEPRECATED, DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        _export_torchscript(model, sample, buf, mode)
    data = buf.getvalue()
    ir = onnx.load_from_string(data).ir_version
    if ir > _MAX_IR_VERSION:
        raise RuntimeError(f"exported ONNX IR version {ir} > {_MAX_IR_VERSION}: pin onnx==1.16.2")
    return data


def _export_torchscript(
    model: torch.nn.Module, sample: torch.Tensor, buf: io.BytesIO, mode: torch.onnx.TrainingMode
) -> None:
    torch.onnx.export(
        model,
        (sample,),
        buf,  # type: ignore[arg-type]  # a file-like object works and keeps bytes in memory
        input_names=[INPUT_NAME],
        output_names=[_OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, _OUTPUT_NAME: {0: "batch"}},
        opset_version=_OPSET,
        dynamo=False,  # the TorchScript exporter is the one whose graphs ORT trains (FACTS.md)
        training=mode,
        do_constant_folding=False,  # keep every parameter a named initializer
        export_params=True,
    )


def _measure_flat_order(
    tmp: Path, names: list[str], shapes: dict[str, tuple[int, ...]]
) -> list[str]:
    """Parameter names in ORT's contiguous buffer order: write 0..n-1, read each one back."""
    state = CheckpointState.load_checkpoint(str(tmp / "checkpoint"))
    module = Module(str(tmp / TRAINING_MODEL), state, str(tmp / EVAL_MODEL))
    n = module.get_parameters_size(trainable_only=False)
    if n != sum(math.prod(s) for s in shapes.values()):
        raise RuntimeError(
            f"ORT holds {n} parameters, torch {sum(map(math.prod, shapes.values()))}"
        )
    probe = np.arange(n, dtype=np.float32)  # exact in float32 up to 2**24 parameters
    if n >= 1 << 24:
        raise RuntimeError("model too large for the exact order probe")
    module.copy_buffer_to_parameters(
        onnxruntime.OrtValue.ortvalue_from_numpy(probe)._ortvalue, trainable_only=False
    )
    offsets: dict[str, int] = {}
    for name in names:
        values = np.asarray(state.parameters[name].data).ravel()  # (size,) float32
        start = int(values[0])
        if not np.array_equal(values, probe[start : start + values.size]):
            raise RuntimeError(f"parameter {name} is not one contiguous run of the ORT buffer")
        offsets[name] = start
    order = sorted(names, key=offsets.__getitem__)
    expected = 0
    for name in order:  # the runs must tile the buffer exactly
        if offsets[name] != expected:
            raise RuntimeError(f"gap or overlap before {name} in the ORT buffer")
        expected += math.prod(shapes[name])
    return order


def _check_initial_weights(tmp: Path, flat: np.ndarray) -> None:
    """The full checkpoint's contiguous buffer must equal our flat vector bit for bit."""
    state = CheckpointState.load_checkpoint(str(tmp / "checkpoint"))
    module = Module(str(tmp / TRAINING_MODEL), state, str(tmp / EVAL_MODEL))
    ort_flat = module.get_contiguous_parameters(trainable_only=False).numpy()
    if not np.array_equal(ort_flat, flat):
        raise RuntimeError("initial weights in manifest order differ from ORT's buffer")


def export_artifacts(
    model: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    out_dir: Path,
    seed: int = 0,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    *,
    optimizer: str = "adamw",
    hidden: tuple[int, ...] | None = None,
) -> Manifest:
    """Build `model`, export its artifacts into `out_dir` (created) and return the manifest."""
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate must be positive, got {learning_rate}")
    input_shape = tuple(int(d) for d in input_shape)
    onnxruntime.set_default_logger_severity(3)  # ORT's graph transformers log every pass at INFO

    torch.manual_seed(seed)
    net = build_model(model, input_shape, num_classes, hidden)
    sample = torch.zeros((2, *input_shape), dtype=torch.float32)  # (batch, *input_shape)
    training_onnx = onnx.load_from_string(_onnx_bytes(net, sample, training=True))
    inference_bytes = _onnx_bytes(net, sample, training=False)
    tensors = {n: p.detach().numpy().astype(np.float32) for n, p in net.named_parameters()}
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        _graph_utils._GRAPH_TOKEN = 0  # onnxblock's node-name counter; see module docstring
        with _native_stderr_quiet():
            ort_artifacts.generate_artifacts(
                training_onnx,
                requires_grad=list(tensors),
                frozen_params=[],
                loss=ort_artifacts.LossType.CrossEntropyLoss,
                optimizer=OPTIMIZERS[optimizer],
                artifact_directory=tmp,
                nominal_checkpoint=True,
                additional_output_names=[_OUTPUT_NAME],  # eval needs logits for accuracy and F1
            )
        order = _measure_flat_order(tmp, list(tensors), shapes)
        params = tuple(ParamSpec(name, shapes[name]) for name in order)
        flat = np.concatenate([tensors[p.name].ravel() for p in params])  # (num_params,) float32
        _check_initial_weights(tmp, flat)

        weights_buf = io.BytesIO()
        np.save(weights_buf, flat, allow_pickle=False)
        files = {
            TRAINING_MODEL: (tmp / TRAINING_MODEL).read_bytes(),
            EVAL_MODEL: (tmp / EVAL_MODEL).read_bytes(),
            OPTIMIZER_MODEL: (tmp / OPTIMIZER_MODEL).read_bytes(),
            INFERENCE_MODEL: inference_bytes,
            CHECKPOINT: (tmp / "nominal_checkpoint").read_bytes(),
            INITIAL_WEIGHTS: weights_buf.getvalue(),
        }
    manifest = Manifest(
        model_name=model,
        params=params,
        input_name=INPUT_NAME,
        input_shape=input_shape,
        num_classes=num_classes,
        loss="cross_entropy",
        optimizer=optimizer,
        learning_rate=float(learning_rate),
        files={name: sha256_hex(data) for name, data in files.items()},
        extra={
            "seed": seed,
            "hidden": list(hidden) if hidden is not None else None,
            "opset": _OPSET,
            "checkpoint": "nominal",
            "onnx": importlib.metadata.version("onnx"),
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
        },
    )
    for name, data in files.items():
        _write_atomic(out_dir / name, data)
    _write_atomic(out_dir / MANIFEST_FILE, encode_manifest(manifest))  # last: marks the folder done
    log.info("exported %s (%d parameters) to %s", model, manifest.num_params, out_dir)
    return manifest


@contextlib.contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """Silence C++ writes to fd 2 (ORT's gradient builder logs every pass at INFO, no knob).

    What was written is replayed to stderr if the block raises, so failures stay diagnosable.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace")[-20000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
