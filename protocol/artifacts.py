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
    "CHECKPOINT",
    "EVAL_MODEL",
    "INFERENCE_MODEL",
    "INITIAL_WEIGHTS",
    "MANIFEST_FILE",
    "MAX_ARTIFACT_BYTES",
    "OPTIMIZER_MODEL",
    "TRAINING_MODEL",
    "decode_initial_weights",
    "sha256_hex",
    "verify_file",
]

MANIFEST_FILE = "manifest.json"
TRAINING_MODEL = "training_model.onnx"  # forward + loss + gradient graph (ORT training API)
EVAL_MODEL = "eval_model.onnx"  # forward + loss, outputs (loss, logits)
OPTIMIZER_MODEL = "optimizer_model.onnx"  # the optimizer graph (AdamW or SGD)
INFERENCE_MODEL = "inference.onnx"  # plain forward graph; initializer names = manifest names
CHECKPOINT = "checkpoint"  # ORT *nominal* checkpoint: parameter names and shapes, no values
INITIAL_WEIGHTS = "initial_weights.npy"  # (num_params,) float32, manifest order

# Every file the manifest must list (the manifest itself is not listed: it holds the hashes).
ARTIFACT_FILES: tuple[str, ...] = (
    TRAINING_MODEL,
    EVAL_MODEL,
    OPTIMIZER_MODEL,
    INFERENCE_MODEL,
    CHECKPOINT,
    INITIAL_WEIGHTS,
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
    try:
        # allow_pickle=False: a .npy with object arrays would run code on load.
        flat = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ProtocolError(
            Reason.MALFORMED, f"{INITIAL_WEIGHTS}: not a plain .npy array: {exc}"
        ) from exc
    if not isinstance(flat, np.ndarray) or flat.dtype != np.float32:
        dtype = getattr(flat, "dtype", None)
        raise ProtocolError(Reason.DTYPE, f"{INITIAL_WEIGHTS}: dtype {dtype} is not float32")
    if flat.shape != (manifest.num_params,):
        raise ProtocolError(
            Reason.SHAPE, f"{INITIAL_WEIGHTS}: shape {flat.shape} != ({manifest.num_params},)"
        )
    if not np.isfinite(flat).all():
        raise ProtocolError(Reason.NON_FINITE, f"{INITIAL_WEIGHTS}: NaN or infinity")
    return flat
