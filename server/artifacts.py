"""Read what the server needs from an artifacts folder, checking each file against the manifest.

manifest.json        -> Manifest (model id = its digest)
initial_weights.npy  -> (num_params,) float32; sha256 checked, loaded with allow_pickle=False
inference.onnx       -> path, for evaluation (sha256 checked when read)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.artifacts import (
    INFERENCE_MODEL,
    INITIAL_WEIGHTS,
    MANIFEST_FILE,
    decode_initial_weights,
    verify_file,
)
from protocol.errors import DataError, ProtocolError
from protocol.manifest import Manifest, decode_manifest

__all__ = ["ServerArtifacts", "load_server_artifacts"]


@dataclass(frozen=True)
class ServerArtifacts:
    folder: Path
    manifest: Manifest
    initial_weights: np.ndarray  # (num_params,) float32
    inference_model: Path


def _read(folder: Path, name: str) -> bytes:
    try:
        return (folder / name).read_bytes()
    except OSError as exc:
        raise DataError(f"{folder / name}: cannot read artifact: {exc}") from exc


def load_server_artifacts(folder: Path) -> ServerArtifacts:
    try:
        manifest = decode_manifest(_read(folder, MANIFEST_FILE))
        raw = _read(folder, INITIAL_WEIGHTS)
        verify_file(manifest, INITIAL_WEIGHTS, raw)
        verify_file(manifest, INFERENCE_MODEL, _read(folder, INFERENCE_MODEL))
        weights = decode_initial_weights(manifest, raw)
    except ProtocolError as exc:  # its message names the file
        raise DataError(f"{folder}: {exc}") from exc
    return ServerArtifacts(folder, manifest, weights, folder / INFERENCE_MODEL)
