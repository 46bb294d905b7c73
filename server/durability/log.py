"""Append-only update log in numbered segments, each record framed with its lengths and a CRC.

    <folder>/00000001.log  00000002.log ...
    record = b"FLR2" | u32 meta length | u32 body length | u32 crc32c(meta + body) | meta | body
    (little endian; meta is the msgpack record, body the update's bytes as the device sent them)

Records written before the body had its own section (b"FLR1" | u32 length | u32 crc32(meta) |
meta, the update inside meta) are still read, so a server upgrades with its log in place.
CRC32C instead of zlib's CRC32: google-crc32c's hardware-accelerated form checks a 1 MB update in
0.04 ms against zlib's 0.5 ms (measured here), and a separate body is written straight from the
received message by writev(2) instead of being copied into a msgpack record first.

`append` writes one record with one writev(2); `sync` makes everything appended durable
(fdatasync). A position is (segment, byte offset). A checkpoint records the position its state
includes; `rotate` starts a fresh segment so older ones can be deleted after the checkpoint.

Reading (`read_from`) stops at the first record that is cut short or fails its CRC. That can only
be the tail of the newest segment after a crash mid-write (nothing past the last fsync was ever
acknowledged): it is truncated away with a loud log line and never applied. A bad record in an
older segment cannot come from a crash, so it is refused as a DataError.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from protocol.errors import DataError
from server.durability.writer import RecordWriter

__all__ = ["LogPosition", "LogRecord", "TailReport", "UpdateLog", "fsync_dir"]

_log = logging.getLogger(__name__)
_MAGIC = b"FLR2"
_HEADER = struct.Struct("<4sIII")
_MAGIC_V1 = b"FLR1"  # read only
_HEADER_V1 = struct.Struct("<4sII")
_MAX_RECORD = 1 << 30  # a sanity bound on the length field (an update is at most ~16 MiB)


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class LogRecord:
    meta: bytes  # the msgpack record
    body: bytes = b""  # the update as received (empty for records without one, and for FLR1)


@dataclass(frozen=True, slots=True)
class TailReport:
    """What recovery found wrong at the end of the log (None from `read_from` if nothing)."""

    segment: int
    offset: int  # where the bad record starts (the file is truncated here)
    dropped_bytes: int
    why: str


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_path(folder: Path, segment: int) -> Path:
    return folder / f"{segment:08d}.log"


def _segments(folder: Path) -> list[int]:
    out = []
    for p in folder.glob("*.log"):
        if p.stem.isdigit() and len(p.stem) == 8:
            out.append(int(p.stem))
    return sorted(out)


def _done() -> None:
    """Waiting for nothing."""


def _crc(meta: bytes, body: bytes) -> int:
    return int(google_crc32c.extend(google_crc32c.value(meta), body))


def _frame(meta: bytes, body: bytes) -> bytes:
    """The header written in front of meta and body."""
    return _HEADER.pack(_MAGIC, len(meta), len(body), _crc(meta, body))


def _scan(data: bytes) -> Iterator[tuple[int, LogRecord] | tuple[int, str]]:
    """Yield (end_offset, record) per good record, then at most one (offset, why) for a bad one."""
    offset = 0
    while offset < len(data):
        magic = data[offset : offset + 4]
        v1 = magic == _MAGIC_V1  # FLR1: meta only, zlib CRC32
        header = _HEADER_V1 if v1 else _HEADER
        if len(data) - offset < header.size:
            yield offset, f"truncated header ({len(data) - offset} bytes)"
            return
        if v1:
            _, meta_len, crc = _HEADER_V1.unpack_from(data, offset)
            body_len = 0
        elif magic == _MAGIC:
            _, meta_len, body_len, crc = _HEADER.unpack_from(data, offset)
        else:
            yield offset, "bad record header"
            return
        if meta_len + body_len > _MAX_RECORD:
            yield offset, "bad record header"
            return
        start = offset + header.size
        if len(data) - start < meta_len + body_len:
            have = len(data) - start
            yield offset, f"truncated record ({have} of {meta_len + body_len} bytes)"
            return
        meta = data[start : start + meta_len]
        body = data[start + meta_len : start + meta_len + body_len]
        ok = zlib.crc32(meta) == crc if v1 else _crc(meta, body) == crc
        if not ok:
            yield offset, "CRC mismatch"
            return
        offset = start + meta_len + body_len
        yield offset, LogRecord(meta, body)


class UpdateLog:
    """The writer. Open it only after `read_from` has recovered (and truncated) the folder.

    Records are written by a background thread (server/durability/writer.py) in the order they
    were appended; `sync` waits for them and their fdatasync."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        segments = _segments(folder)
        self._segment = segments[-1] if segments else 1
        path = _segment_path(folder, self._segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._offset = os.fstat(fd).st_size
        if not segments:
            fsync_dir(folder)
        self._unsynced = 0
        self._writer = RecordWriter(fd, _frame)
        self._last_barrier: threading.Event | None = None  # the newest fdatasync queued
        self._closed = False

    @property
    def position(self) -> LogPosition:
        """End of what has been appended (synced or not)."""
        return LogPosition(self._segment, self._offset)

    def append(self, meta: bytes, body: bytes = b"") -> LogPosition:
        """Queue one record; its position is known now, its bytes are on disk after `sync`."""
        if len(meta) + len(body) > _MAX_RECORD:
            raise ValueError(f"log record of {len(meta) + len(body)} bytes is too large")
        self._writer.append(self._offset, meta, body)
        self._offset += _HEADER.size + len(meta) + len(body)
        self._unsynced += 1
        return self.position

    def sync(self) -> None:
        """Return once everything appended so far is on disk."""
        self.sync_start()()

    def sync_start(self) -> Callable[[], None]:
        """Queue the fdatasync of everything appended so far; call the result to wait for it
        (the caller may append more meanwhile: a pipelined group commit). With nothing new
        appended it waits for the last fdatasync queued, which may still be running."""
        if self._unsynced:
            self._last_barrier = self._writer.barrier()
            self._unsynced = 0
        barrier = self._last_barrier
        if barrier is None:
            return _done
        return lambda: self._writer.wait(barrier)

    def rotate(self) -> LogPosition:
        """Sync, then continue in a fresh segment; returns its start position."""
        self.sync()  # the writer is idle now: its file can be swapped
        os.close(self._writer.fd)
        self._segment += 1
        path = _segment_path(self.folder, self._segment)
        self._writer.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._offset = 0
        fsync_dir(self.folder)
        return self.position

    def remove_before(self, segment: int) -> None:
        """Delete segments older than `segment` (their records are in a checkpoint)."""
        for s in _segments(self.folder):
            if s < segment:
                _segment_path(self.folder, s).unlink()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._unsynced = 0
            try:
                self._writer.close()
            finally:
                os.close(self._writer.fd)


def read_from(
    folder: Path, start: LogPosition
) -> tuple[list[LogRecord], LogPosition, TailReport | None]:
    """Every good record after `start`, the position after the last one, and any bad tail.

    A bad tail in the newest segment is truncated (fsynced) and reported; anywhere else it is a
    DataError. Segments before `start.segment` are ignored (already checkpointed).
    """
    records: list[LogRecord] = []
    end = start
    report: TailReport | None = None
    segments = [s for s in _segments(folder) if s >= start.segment] if folder.exists() else []
    for i, segment in enumerate(segments):
        path = _segment_path(folder, segment)
        data = path.read_bytes()
        offset = start.offset if segment == start.segment else 0
        if offset > len(data):
            raise DataError(
                f"{path}: checkpoint points at offset {offset} past its end {len(data)}"
            )
        end = LogPosition(segment, offset)
        for at, item in _scan(data[offset:]):
            if isinstance(item, LogRecord):
                records.append(item)
                end = LogPosition(segment, offset + at)
                continue
            bad_at = offset + at
            if i != len(segments) - 1:
                raise DataError(f"{path}: {item} at offset {bad_at} in a sealed segment")
            report = TailReport(segment, bad_at, len(data) - bad_at, item)
            _log.error(
                "update log %s: %s at offset %d; truncating %d bytes that were never "
                "acknowledged (not applied)",
                path,
                item,
                bad_at,
                len(data) - bad_at,
            )
            with open(path, "r+b") as f:
                f.truncate(bad_at)
                f.flush()
                os.fsync(f.fileno())
    return records, end, report
