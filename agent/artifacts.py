"""Read an artifacts folder on the device: manifest, file hashes, initial weights.

Files are untrusted until their sha256 matches the manifest; nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.artifacts import (
    ARTIFACT_FILES,
    FROZEN_WEIGHTS,
    INITIAL_WEIGHTS,
    MANIFEST_FILE,
    MAX_ARTIFACT_BYTES,
    decode_frozen_weights,
    decode_initial_weights,
    verify_file,
)
from protocol.errors import DataError, ProtocolError
from protocol.manifest import Manifest, decode_manifest

__all__ = ["Artifacts", "load_artifacts"]


@dataclass(frozen=True)
class Artifacts:
    dir: Path
    manifest: Manifest
    initial_weights: np.ndarray  # (num_params,) float32, manifest order (trainable)
    frozen_weights: np.ndarray  # (num_frozen,) float32, manifest.frozen order

    def path(self, name: str) -> Path:
        return self.dir / name


def _read(path: Path, limit: int) -> bytes:
    """Size first (stat), then the bytes."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise DataError(f"{path}: {size} bytes is more than the {limit} allowed")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing from the artifacts folder") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def load_artifacts(dir: Path) -> Artifacts:
    """Read and verify `dir`: manifest valid, every listed file present with the right sha256."""
    dir = Path(dir)
    manifest_path = dir / MANIFEST_FILE
    try:
        manifest = decode_manifest(_read(manifest_path, 1 << 20))
    except ProtocolError as exc:
        raise DataError(f"{manifest_path}: {exc}") from exc
    missing = [name for name in ARTIFACT_FILES if name not in manifest.files]
    if missing:
        raise DataError(f"{manifest_path}: files {missing} not listed")
    weights: np.ndarray | None = None
    frozen: np.ndarray | None = None
    for name in ARTIFACT_FILES:
        path = dir / name
        data = _read(path, MAX_ARTIFACT_BYTES)
        try:
            verify_file(manifest, name, data)
            if name == INITIAL_WEIGHTS:  # parse the verified bytes, not a second read
                weights = decode_initial_weights(manifest, data)
            elif name == FROZEN_WEIGHTS:
                frozen = decode_frozen_weights(manifest, data)
        except ProtocolError as exc:  # its message names the file
            raise DataError(f"{dir}: {exc}") from exc
    for name in sorted(set(manifest.files) - set(ARTIFACT_FILES)):  # e.g. a text model's tokenizer
        try:
            verify_file(manifest, name, _read(dir / name, MAX_ARTIFACT_BYTES))
        except ProtocolError as exc:
            raise DataError(f"{dir}: {exc}") from exc
    assert weights is not None and frozen is not None  # both are in ARTIFACT_FILES
    return Artifacts(dir=dir, manifest=manifest, initial_weights=weights, frozen_weights=frozen)
