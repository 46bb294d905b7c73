"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader sees the old file or the new one, never half of either, even after power loss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import DataError

__all__ = ["atomic_write_bytes", "atomic_write_json", "fsync_dir", "load_npy", "npy_bytes"]


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def npy_bytes(vec: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, vec, allow_pickle=False)
    return buf.getvalue()


def load_npy(path: Path, length: int) -> np.ndarray:
    """A flat float32 vector of `length` from our own state folder, checked like untrusted input."""
    try:
        # allow_pickle=False: a .npy must never execute code, even one we wrote ourselves.
        vec = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy file: {exc}") from exc
    if vec.dtype != np.float32 or vec.shape != (length,):
        raise DataError(f"{path}: expected float32 ({length},), got {vec.dtype} {vec.shape}")
    if not np.isfinite(vec).all():
        raise DataError(f"{path}: contains NaN or infinity")
    return np.asarray(vec, dtype=np.float32)
