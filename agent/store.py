"""The agent's durable state: sequence numbers, the outbox, the error-feedback residual, progress.

    <state_dir>/sequence.json        {"next": N}   per-device sequence numbers survive restarts
    <state_dir>/residual.npy         (n_params,) float32: compression error still owed
    <state_dir>/progress.json        {"trained_version", "trained_at"}
    <state_dir>/outbox/<seq>/        one committed update, created by one atomic rename:
        update.bin                   the encoded ClientUpdate, re-sent byte for byte
        residual_before.npy          residual folded into this update
        residual_after.npy           residual left over after compressing it
        meta.json                    {"seq", "base_version", "created_at"}

Residual rule (coherent across crashes, acks and rejections): the *current* residual is the
newest outbox entry's ``residual_after`` if one is pending, else ``residual.npy``. Writing an
update and its residual is therefore one atomic rename; a crash at any instant leaves either
both or neither.
- Delivered (Ack accepted; the server acks a byte-identical redelivery as accepted): the entry's
  ``residual_after`` becomes ``residual.npy``, then the entry is removed.
- Dropped (rejected as stale or otherwise refused for good): ``residual_before`` becomes
  ``residual.npy``. The residual means "compression error owed on work the server applied"; the
  dropped delta was never applied and the server judged it too old, so folding it back would
  smuggle stale work past the staleness bound. The debt from earlier accepted updates stays owed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.fsio import atomic_write_bytes, atomic_write_json, fsync_dir, load_npy, npy_bytes
from protocol.errors import DataError

__all__ = ["OutboxEntry", "Progress", "StateStore"]

_MAX_UPDATE_FILE = 64 * 1024 * 1024  # refuse to load absurd files from a corrupted disk


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    base_version: int
    created_at: float
    payload: bytes  # encoded ClientUpdate


@dataclass(frozen=True)
class Progress:
    trained_version: int | None = None  # global version the last committed update was based on
    trained_at: float | None = None  # wall-clock time of that commit


def _read_json(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable state file: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object")
    return doc


def _int_field(doc: dict[str, object], key: str, path: Path) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(f"{path}: {key!r} must be a non-negative integer, got {value!r}")
    return value


class StateStore:
    """All durable agent state under one folder. Not thread-safe: the agent loop owns it."""

    def __init__(self, state_dir: Path, num_params: int) -> None:
        self.dir = state_dir
        self.num_params = num_params
        self.outbox_dir = state_dir / "outbox"
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        for junk in self.outbox_dir.glob(".*"):  # half-built or half-removed entries of a crash
            shutil.rmtree(junk, ignore_errors=True)
        self._seq_path = state_dir / "sequence.json"
        self._residual_path = state_dir / "residual.npy"
        self._progress_path = state_dir / "progress.json"

    # -- sequence numbers -------------------------------------------------------------------
    def next_sequence(self) -> int:
        """Allocate the next sequence number; it is durable before it is returned."""
        seq = max([self._stored_next(), *(s + 1 for s in self._pending_seqs())])
        atomic_write_json(self._seq_path, {"next": seq + 1})
        return seq

    def _stored_next(self) -> int:
        if not self._seq_path.exists():
            return 1
        return _int_field(_read_json(self._seq_path), "next", self._seq_path)

    def skip_sequence_to(self, floor: int) -> int:
        """Make the next sequence number at least `floor` (after a REPLAY refusal); returns it."""
        stored = self._stored_next()
        nxt = max(stored, floor)
        atomic_write_json(self._seq_path, {"next": nxt})
        return nxt

    # -- residual ---------------------------------------------------------------------------
    def residual(self) -> np.ndarray:
        """The current residual, (n_params,) float32 (see the module docstring)."""
        seqs = self._pending_seqs()
        if seqs:
            return load_npy(self.outbox_dir / str(seqs[-1]) / "residual_after.npy", self.num_params)
        if self._residual_path.exists():
            return load_npy(self._residual_path, self.num_params)
        return np.zeros(self.num_params, np.float32)

    # -- outbox -----------------------------------------------------------------------------
    def pending_seqs(self) -> list[int]:
        """Sequence numbers in the outbox, oldest first (a directory listing, no file reads)."""
        return self._pending_seqs()

    def _pending_seqs(self) -> list[int]:
        return sorted(int(p.name) for p in self.outbox_dir.iterdir() if p.name.isdigit())

    def commit(
        self,
        seq: int,
        base_version: int,
        payload: bytes,
        residual_before: np.ndarray,
        residual_after: np.ndarray,
        created_at: float,
    ) -> None:
        """Write one update and its residuals into the outbox with one atomic rename."""
        tmp = self.outbox_dir / f".tmp-{seq}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        meta = {"seq": seq, "base_version": base_version, "created_at": created_at}
        files = {
            "update.bin": payload,
            "residual_before.npy": npy_bytes(residual_before.astype(np.float32, copy=False)),
            "residual_after.npy": npy_bytes(residual_after.astype(np.float32, copy=False)),
            "meta.json": json.dumps(meta).encode(),
        }
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, self.outbox_dir / str(seq))
        fsync_dir(self.outbox_dir)
        atomic_write_json(
            self._progress_path, {"trained_version": base_version, "trained_at": created_at}
        )

    def record_secure_round(self, base_version: int, residual: np.ndarray, at: float) -> None:
        """A secure-aggregation round the server applied: it never sat in the outbox (a cohort is
        live, there is nothing to re-send), so only the residual and the progress advance."""
        atomic_write_bytes(self._residual_path, npy_bytes(residual.astype(np.float32, copy=False)))
        atomic_write_json(self._progress_path, {"trained_version": base_version, "trained_at": at})

    def pending(self) -> list[OutboxEntry]:
        """Committed, unacknowledged updates, oldest first."""
        return [self.entry(seq) for seq in self._pending_seqs()]

    def entry(self, seq: int) -> OutboxEntry:
        """One outbox entry, read and checked."""
        folder = self.outbox_dir / str(seq)
        meta = _read_json(folder / "meta.json")
        update = folder / "update.bin"
        if update.stat().st_size > _MAX_UPDATE_FILE:
            raise DataError(f"{update}: larger than {_MAX_UPDATE_FILE} bytes")
        created = meta.get("created_at")
        return OutboxEntry(
            seq=_int_field(meta, "seq", folder / "meta.json"),
            base_version=_int_field(meta, "base_version", folder / "meta.json"),
            created_at=float(created) if isinstance(created, int | float) else 0.0,
            payload=update.read_bytes(),
        )

    def _remove(self, seq: int, residual_file: str) -> bool:
        folder = self.outbox_dir / str(seq)
        if not folder.is_dir():
            return False
        if self._pending_seqs()[-1] == seq:  # the newest entry defines the current residual
            residual = load_npy(folder / residual_file, self.num_params)
            atomic_write_bytes(self._residual_path, npy_bytes(residual))
        trash = self.outbox_dir / f".trash-{seq}"
        os.rename(folder, trash)
        fsync_dir(self.outbox_dir)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def delivered(self, seq: int) -> bool:
        """The server has the update: keep its leftover residual, drop it from the outbox."""
        return self._remove(seq, "residual_after.npy")

    def dropped(self, seq: int) -> bool:
        """The server refused the update for good: restore the residual from before it."""
        return self._remove(seq, "residual_before.npy")

    # -- progress ---------------------------------------------------------------------------
    def progress(self) -> Progress:
        if not self._progress_path.exists():
            return Progress()
        doc = _read_json(self._progress_path)
        version, at = doc.get("trained_version"), doc.get("trained_at")
        return Progress(
            trained_version=version if isinstance(version, int) else None,
            trained_at=float(at) if isinstance(at, int | float) else None,
        )
