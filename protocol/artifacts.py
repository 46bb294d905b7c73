"""The artifacts folder's contract: file names and content checks. Pure: callers do the reading.

A folder written by `fleetlearn export` holds the files below; `manifest.json` records the sha256
of every other file, so the manifest digest (the model id) content-addresses the whole folder.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest

__all__ = [
    "ARTIFACT_FILES",
    "FORWARD_MODEL",
    "FROZEN_WEIGHTS",
    "INFERENCE_MODEL",
    "INITIAL_WEIGHTS",
    "MANIFEST_FILE",
    "MAX_ARTIFACT_BYTES",
    "TRAIN_STEP_MODEL",
    "decode_frozen_weights",
    "decode_initial_weights",
    "sha256_hex",
    "verify_file",
]

MANIFEST_FILE = "manifest.json"
# One training step as a plain ONNX graph (default domain only: any ONNX Runtime runs it).
# Inputs: trainable params (manifest.params names), frozen tensors (manifest.frozen names),
# optimizer state `state.<slot>` (zeros at round start), the batch (manifest.input_name),
# `labels` (batch,) int64, `lr` () float32. Outputs: `new.<param>`, `new_state.<slot>`, `loss`,
# `logits`. See models/step_graph.py.
TRAIN_STEP_MODEL = "train_step.onnx"
FORWARD_MODEL = "forward.onnx"  # (params..., frozen..., input) -> logits: evaluation
INFERENCE_MODEL = "inference.onnx"  # self-contained input -> logits; initializers = param names
INITIAL_WEIGHTS = "initial_weights.npy"  # (num_params,) float32, manifest order (trainable)
FROZEN_WEIGHTS = "frozen_weights.npy"  # (num_frozen,) float32, manifest.frozen order

# Every file the manifest must list (the manifest itself is not listed: it holds the hashes).
ARTIFACT_FILES: tuple[str, ...] = (
    TRAIN_STEP_MODEL,
    FORWARD_MODEL,
    INFERENCE_MODEL,
    INITIAL_WEIGHTS,
    FROZEN_WEIGHTS,
)
# Edge models are small; anything past this is not ours (checked before reading or hashing).
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_file(manifest: Manifest, name: str, data: bytes) -> None:
    """Check that `data` is the artifact file `name` the manifest names (size, then sha256)."""
    expected = manifest.files.get(name)
    if expected is None:
        raise ProtocolError(Reason.FIELD, f"{name}: not listed in the manifest's files")
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ProtocolError(Reason.OVERSIZE, f"{name}: {len(data)} bytes > {MAX_ARTIFACT_BYTES}")
    actual = sha256_hex(data)
    if actual != expected:
        raise ProtocolError(
            Reason.UNKNOWN_MODEL,
            f"{name}: sha256 {actual[:16]}... does not match the manifest's {expected[:16]}...",
        )


def decode_initial_weights(manifest: Manifest, data: bytes) -> np.ndarray:
    """The bytes of INITIAL_WEIGHTS -> (num_params,) float32, finite; checked, never unpickled."""
    return _decode_flat(INITIAL_WEIGHTS, data, manifest.num_params)


def decode_frozen_weights(manifest: Manifest, data: bytes) -> np.ndarray:
    """The bytes of FROZEN_WEIGHTS -> (num_frozen,) float32, finite; checked, never unpickled."""
    return _decode_flat(FROZEN_WEIGHTS, data, manifest.num_frozen)


def _decode_flat(name: str, data: bytes, size: int) -> np.ndarray:
    try:
        # allow_pickle=False: a .npy with object arrays would run code on load.
        flat = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ProtocolError(Reason.MALFORMED, f"{name}: not a plain .npy array: {exc}") from exc
    if not isinstance(flat, np.ndarray) or flat.dtype != np.float32:
        dtype = getattr(flat, "dtype", None)
        raise ProtocolError(Reason.DTYPE, f"{name}: dtype {dtype} is not float32")
    if flat.shape != (size,):
        raise ProtocolError(Reason.SHAPE, f"{name}: shape {flat.shape} != ({size},)")
    if not np.isfinite(flat).all():
        raise ProtocolError(Reason.NON_FINITE, f"{name}: NaN or infinity")
    return flat
