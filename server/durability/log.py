"""Append-only update log in numbered segments, each record framed with its length and CRC32.

    <folder>/00000001.log  00000002.log ...
    record = magic b"FLR1" | u32 length | u32 crc32(payload) | payload      (little endian)

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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import DataError
from server.faults import fault_point

__all__ = ["LogPosition", "TailReport", "UpdateLog", "fsync_dir"]

_log = logging.getLogger(__name__)
_MAGIC = b"FLR1"
_HEADER = struct.Struct("<4sII")
_MAX_RECORD = 1 << 30  # a sanity bound on the length field (an update is at most ~16 MiB)


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    segment: int
    offset: int


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


def _scan(data: bytes) -> Iterator[tuple[int, bytes] | tuple[int, str]]:
    """Yield (end_offset, payload) per good record, then at most one (offset, why) for a bad one."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            yield offset, f"truncated header ({len(data) - offset} bytes)"
            return
        magic, length, crc = _HEADER.unpack_from(data, offset)
        if magic != _MAGIC or length > _MAX_RECORD:
            yield offset, "bad record header"
            return
        start = offset + _HEADER.size
        if len(data) - start < length:
            yield offset, f"truncated record ({len(data) - start} of {length} bytes)"
            return
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            yield offset, "CRC mismatch"
            return
        offset = start + length
        yield offset, payload


class UpdateLog:
    """The writer. Open it only after `read_from` has recovered (and truncated) the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        segments = _segments(folder)
        self._segment = segments[-1] if segments else 1
        path = _segment_path(folder, self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._offset = os.fstat(self._fd).st_size
        if not segments:
            fsync_dir(folder)
        self._unsynced = 0

    @property
    def position(self) -> LogPosition:
        """End of what has been appended (synced or not)."""
        return LogPosition(self._segment, self._offset)

    @property
    def unsynced(self) -> int:
        return self._unsynced

    def append(self, payload: bytes) -> LogPosition:
        header = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload))
        size = len(header) + len(payload)
        written = os.writev(self._fd, [header, payload])  # one syscall, no joined copy
        if written != size:  # a short write on a regular file: disk full
            raise OSError(f"short write to update log ({written} of {size} bytes)")
        self._offset += written
        self._unsynced += 1
        fault_point("log.appended")
        return self.position

    def sync(self) -> None:
        if self._unsynced:
            os.fdatasync(self._fd)
            self._unsynced = 0
            fault_point("log.synced")

    def rotate(self) -> LogPosition:
        """Sync, then continue in a fresh segment; returns its start position."""
        self.sync()
        os.close(self._fd)
        self._segment += 1
        path = _segment_path(self.folder, self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._offset = 0
        fsync_dir(self.folder)
        return self.position

    def remove_before(self, segment: int) -> None:
        """Delete segments older than `segment` (their records are in a checkpoint)."""
        for s in _segments(self.folder):
            if s < segment:
                _segment_path(self.folder, s).unlink()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def read_from(
    folder: Path, start: LogPosition
) -> tuple[list[bytes], LogPosition, TailReport | None]:
    """Every good record after `start`, the position after the last one, and any bad tail.

    A bad tail in the newest segment is truncated (fsynced) and reported; anywhere else it is a
    DataError. Segments before `start.segment` are ignored (already checkpointed).
    """
    payloads: list[bytes] = []
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
            if isinstance(item, bytes):
                payloads.append(item)
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
    return payloads, end, report
