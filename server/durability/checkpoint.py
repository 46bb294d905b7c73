"""Atomic checkpoints of the server's whole state: model, version, strategy, sequence table.

File: msgpack document followed by its sha256 (32 bytes). Written to a temp file in the same
folder, fsynced, renamed over the old one, then the folder is fsynced, so a reader sees either the
old checkpoint or the new one, never a mix. Arrays travel as raw little-endian bytes with a dtype
from a fixed allow-list (nothing is ever unpickled).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from protocol.bounded_msgpack import unpack_bounded
from protocol.errors import DataError, ProtocolError
from server.durability.log import LogPosition, fsync_dir
from server.faults import fault_point

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.bin"
_SCHEMA = 1
_ARRAY_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Checkpoint:
    model_id: str
    version: int
    model: np.ndarray  # (n,) float32
    strategy_name: str
    strategy_state: dict[str, Any]  # arrays (float32/float64, flat) and scalars
    sequences: dict[str, tuple[int, str]]  # device id -> (last applied seq, payload digest)
    log_position: LogPosition  # the state includes every log record before this
    serving_state: dict[str, Any] = field(default_factory=dict)  # server/serving.py (optional)


def _pack_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.name not in _ARRAY_DTYPES or value.ndim != 1:
            raise ValueError(f"cannot checkpoint array of {value.dtype} shape {value.shape}")
        little = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        return {"__nd__": value.dtype.name, "data": little.data.cast("B")}  # no copy
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"cannot checkpoint value of type {type(value).__name__}")


def _unpack_value(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        dtype = value.get("__nd__")
        data = value.get("data")
        if dtype not in _ARRAY_DTYPES or not isinstance(data, bytes):
            raise DataError(f"{where}: bad array entry")
        item = np.dtype(_ARRAY_DTYPES[dtype]).itemsize
        if len(data) % item:
            raise DataError(f"{where}: array byte length {len(data)} not a multiple of {item}")
        return np.frombuffer(data, dtype=np.dtype(_ARRAY_DTYPES[dtype]).newbyteorder("<")).astype(
            _ARRAY_DTYPES[dtype]
        )
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise DataError(f"{where}: unexpected {type(value).__name__}")


def save_checkpoint(folder: Path, ckpt: Checkpoint) -> Path:
    doc = {
        "schema": _SCHEMA,
        "model_id": ckpt.model_id,
        "version": ckpt.version,
        "model": _pack_value(np.ascontiguousarray(ckpt.model, dtype=np.float32)),
        "strategy": ckpt.strategy_name,
        "strategy_state": {k: _pack_value(v) for k, v in ckpt.strategy_state.items()},
        "sequences": {d: [s, h] for d, (s, h) in ckpt.sequences.items()},
        "log": [ckpt.log_position.segment, ckpt.log_position.offset],
        "serving_state": {k: _pack_value(v) for k, v in ckpt.serving_state.items()},
    }
    body = msgpack.packb(doc, use_bin_type=True)
    final = folder / CHECKPOINT_NAME
    tmp = folder / (CHECKPOINT_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for part in (body, hashlib.sha256(body).digest()):  # body + digest without joining them
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    fault_point("checkpoint.written")
    os.replace(tmp, final)
    fsync_dir(folder)
    fault_point("checkpoint.renamed")
    return final


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{path}: field {key!r} missing or of type {type(value).__name__}")
    return value


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint in `folder`, or None if there is none yet. Corruption is a DataError."""
    path = folder / CHECKPOINT_NAME
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(blob) < 32 or hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
        raise DataError(f"{path}: checksum mismatch (corrupt checkpoint)")
    try:
        body = blob[:-32]
        # bounded by its own size (issue 15): a checkpoint holds one map per device at most
        doc = unpack_bounded(
            body,
            str(path),
            max_containers=64 + len(body) // 4,
            max_array_len=len(body),
            max_map_len=len(body),
            max_bytes=len(body),
        )
    except ProtocolError as exc:
        raise DataError(f"{path}: not a checkpoint: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
        raise DataError(f"{path}: unsupported checkpoint schema")
    model = _unpack_value(_get(doc, "model", dict, path), f"{path} model")
    if not isinstance(model, np.ndarray) or model.dtype != np.float32:
        raise DataError(f"{path}: model is not a float32 vector")
    state = {
        str(k): _unpack_value(v, f"{path} strategy_state.{k}")
        for k, v in _get(doc, "strategy_state", dict, path).items()
    }
    sequences: dict[str, tuple[int, str]] = {}
    for device, entry in _get(doc, "sequences", dict, path).items():
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], int)
            and isinstance(entry[1], str)
        ):
            raise DataError(f"{path}: bad sequence entry for {device!r}")
        sequences[str(device)] = (entry[0], entry[1])
    serving = doc.get("serving_state", {})  # absent in checkpoints older than the serving model
    if not isinstance(serving, dict):
        raise DataError(f"{path}: field 'serving_state' is not a map")
    serving_state = {
        str(k): _unpack_value(v, f"{path} serving_state.{k}") for k, v in serving.items()
    }
    log = _get(doc, "log", list, path)
    if len(log) != 2 or not all(isinstance(x, int) and x >= 0 for x in log):
        raise DataError(f"{path}: bad log position {log!r}")
    return Checkpoint(
        model_id=_get(doc, "model_id", str, path),
        version=_get(doc, "version", int, path),
        model=model,
        strategy_name=_get(doc, "strategy", str, path),
        strategy_state=state,
        sequences=sequences,
        log_position=LogPosition(log[0], log[1]),
        serving_state=serving_state,
    )
