"""Update log framing, torn-tail handling, atomic checkpoints."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import DataError
from server.durability import (
    Checkpoint,
    LogPosition,
    LogRecord,
    UpdateLog,
    load_checkpoint,
    read_from,
    save_checkpoint,
)


def _write(folder: Path, payloads: list[bytes]) -> UpdateLog:
    log = UpdateLog(folder)
    for p in payloads:
        log.append(p)
    log.sync()
    return log


def _metas(records: list[LogRecord]) -> list[bytes]:
    return [r.meta for r in records]


def test_log_round_trip_and_positions(tmp_path: Path) -> None:
    log = _write(tmp_path, [b"a", b"bb", b"ccc"])
    assert log.position == LogPosition(1, 3 * 16 + 6)
    pos = log.rotate()
    log.append(b"dddd", b"body")
    log.close()
    got, end, tail = read_from(tmp_path, LogPosition(1, 0))
    assert _metas(got) == [b"a", b"bb", b"ccc", b"dddd"] and tail is None
    assert got[-1].body == b"body" and got[0].body == b""
    assert end == LogPosition(2, 16 + 8)
    got, _, _ = read_from(tmp_path, pos)
    assert got == [LogRecord(b"dddd", b"body")]


def test_record_framing_by_hand(tmp_path: Path) -> None:
    """FLR2 | meta length | body length | CRC32C of meta + body (RFC 3720's check value)."""
    log = _write(tmp_path, [])
    log.append(b"1234", b"56789")
    log.close()
    data = (tmp_path / "00000001.log").read_bytes()
    assert data[:4] == b"FLR2"
    assert struct.unpack_from("<III", data, 4) == (4, 5, 0xE3069283)  # crc32c("123456789")
    assert data[16:] == b"123456789"


def test_records_written_before_the_body_section_are_still_read(tmp_path: Path) -> None:
    """A server upgraded in place replays its FLR1 records, then appends FLR2 after them."""
    old = [b"first", b"second-record"]
    seg = tmp_path / "00000001.log"
    seg.write_bytes(b"".join(struct.pack("<4sII", b"FLR1", len(p), zlib.crc32(p)) + p for p in old))
    got, end, tail = read_from(tmp_path, LogPosition(1, 0))
    assert _metas(got) == old and tail is None and end.offset == seg.stat().st_size
    _write(tmp_path, [b"new"]).close()
    assert _metas(read_from(tmp_path, LogPosition(1, 0))[0]) == [*old, b"new"]
    data = bytearray(seg.read_bytes())
    data[12 + 2] ^= 0xFF  # corrupt the first FLR1 record: its zlib CRC32 catches it
    seg.write_bytes(bytes(data))
    got, _, tail = read_from(tmp_path, LogPosition(1, 0))
    assert got == [] and tail is not None and tail.why == "CRC mismatch"


def test_append_reaches_the_disk_only_at_sync_and_a_write_error_stops_the_log(
    tmp_path: Path,
) -> None:
    """Records are written off the caller's thread; `sync` is the barrier, and a failed write
    (here: the file descriptor closed under the writer) is raised, never silently skipped."""
    log = _write(tmp_path, [b"one"])
    log.append(b"two")
    log.sync()
    assert _metas(read_from(tmp_path, LogPosition(1, 0))[0]) == [b"one", b"two"]
    os.close(log._writer.fd)  # the disk goes away
    log.append(b"three")
    with pytest.raises(OSError, match="update log"):
        log.sync()
    with pytest.raises(OSError, match="update log"):
        log.append(b"four")


def test_a_torn_body_fails_the_crc(tmp_path: Path) -> None:
    log = _write(tmp_path, [])
    log.append(b"meta", bytes(range(200)))
    log.close()
    seg = tmp_path / "00000001.log"
    data = bytearray(seg.read_bytes())
    data[-100:] = bytes(100)  # a crash left zeros where the end of the body should be
    seg.write_bytes(bytes(data))
    got, _, tail = read_from(tmp_path, LogPosition(1, 0))
    assert got == [] and tail is not None and tail.why == "CRC mismatch"


@pytest.mark.parametrize("cut", [1, 5, 16, 17, 24])
def test_torn_tail_is_truncated_and_reported(tmp_path: Path, cut: int) -> None:
    _write(tmp_path, [b"first-record", b"second-record"]).close()
    seg = tmp_path / "00000001.log"
    good = 16 + len(b"first-record")
    data = seg.read_bytes()
    seg.write_bytes(data[: good + cut])  # a crash mid-way through the second record
    got, end, tail = read_from(tmp_path, LogPosition(1, 0))
    assert _metas(got) == [b"first-record"]
    assert tail is not None and tail.offset == good and tail.dropped_bytes == cut
    assert seg.stat().st_size == good and end == LogPosition(1, good)
    # appending after recovery continues cleanly
    _write(tmp_path, [b"third"]).close()
    assert _metas(read_from(tmp_path, LogPosition(1, 0))[0]) == [b"first-record", b"third"]


def test_crc_mismatch_in_tail_is_never_applied(tmp_path: Path) -> None:
    _write(tmp_path, [b"one", b"two"]).close()
    seg = tmp_path / "00000001.log"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    got, _, tail = read_from(tmp_path, LogPosition(1, 0))
    assert _metas(got) == [b"one"] and tail is not None and tail.why == "CRC mismatch"


def test_corruption_in_sealed_segment_is_an_error(tmp_path: Path) -> None:
    log = _write(tmp_path, [b"one", b"two"])
    log.rotate()
    log.append(b"three")
    log.close()
    seg = tmp_path / "00000001.log"
    data = bytearray(seg.read_bytes())
    data[14] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sealed segment"):
        read_from(tmp_path, LogPosition(1, 0))


def _ckpt(version: int) -> Checkpoint:
    return Checkpoint(
        model_id="m1",
        version=version,
        model=np.arange(4, dtype=np.float32),
        strategy_name="fedbuff",
        strategy_state={"sum": np.ones(4), "count": 2, "weight": 2.0, "none": None},
        sequences={"dev-1": (7, "abc")},
        log_position=LogPosition(3, 0),
    )


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, _ckpt(5))
    got = load_checkpoint(tmp_path)
    assert got is not None
    assert got.version == 5 and got.sequences == {"dev-1": (7, "abc")}
    np.testing.assert_array_equal(got.model, np.arange(4, dtype=np.float32))
    assert got.strategy_state["sum"].dtype == np.float64 and got.strategy_state["count"] == 2
    assert got.log_position == LogPosition(3, 0)
    assert not (tmp_path / "checkpoint.bin.tmp").exists()


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _ckpt(1))
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        load_checkpoint(tmp_path)
