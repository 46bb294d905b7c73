"""Update log framing, torn-tail handling, atomic checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol.errors import DataError
from server.durability import (
    Checkpoint,
    LogPosition,
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


def test_log_round_trip_and_positions(tmp_path: Path) -> None:
    log = _write(tmp_path, [b"a", b"bb", b"ccc"])
    assert log.position == LogPosition(1, 3 * 12 + 6)
    pos = log.rotate()
    log.append(b"dddd")
    log.close()
    got, end, tail = read_from(tmp_path, LogPosition(1, 0))
    assert got == [b"a", b"bb", b"ccc", b"dddd"] and tail is None
    assert end == LogPosition(2, 16)
    got, _, _ = read_from(tmp_path, pos)
    assert got == [b"dddd"]


@pytest.mark.parametrize("cut", [1, 5, 12, 13, 20])
def test_torn_tail_is_truncated_and_reported(tmp_path: Path, cut: int) -> None:
    _write(tmp_path, [b"first-record", b"second-record"]).close()
    seg = tmp_path / "00000001.log"
    good = 12 + len(b"first-record")
    data = seg.read_bytes()
    seg.write_bytes(data[: good + cut])  # a crash mid-way through the second record
    got, end, tail = read_from(tmp_path, LogPosition(1, 0))
    assert got == [b"first-record"]
    assert tail is not None and tail.offset == good and tail.dropped_bytes == cut
    assert seg.stat().st_size == good and end == LogPosition(1, good)
    # appending after recovery continues cleanly
    _write(tmp_path, [b"third"]).close()
    assert read_from(tmp_path, LogPosition(1, 0))[0] == [b"first-record", b"third"]


def test_crc_mismatch_in_tail_is_never_applied(tmp_path: Path) -> None:
    _write(tmp_path, [b"one", b"two"]).close()
    seg = tmp_path / "00000001.log"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    got, _, tail = read_from(tmp_path, LogPosition(1, 0))
    assert got == [b"one"] and tail is not None and tail.why == "CRC mismatch"


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
