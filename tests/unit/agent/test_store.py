"""Durable state: sequence numbers, outbox entries and the residual rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.store import StateStore
from protocol.errors import DataError


def test_sequence_survives_reopen(tmp_path: Path) -> None:
    s = StateStore(tmp_path, 3)
    assert [s.next_sequence(), s.next_sequence()] == [1, 2]
    assert StateStore(tmp_path, 3).next_sequence() == 3


def test_sequence_never_reuses_a_pending_one(tmp_path: Path) -> None:
    s = StateStore(tmp_path, 3)
    z = np.zeros(3, np.float32)
    s.commit(7, 1, b"x", z, z, 1.0)  # e.g. sequence.json lost or restored from a backup
    assert s.next_sequence() == 8


def test_residual_rule(tmp_path: Path) -> None:
    s = StateStore(tmp_path, 3)
    np.testing.assert_array_equal(s.residual(), np.zeros(3, np.float32))
    r0 = np.zeros(3, np.float32)
    r1 = np.array([0.1, -0.2, 0.3], np.float32)
    r2 = np.array([1.0, 2.0, 3.0], np.float32)
    s.commit(1, 1, b"u1", r0, r1, 1.0)
    np.testing.assert_array_equal(s.residual(), r1)  # pending entry's leftover is current
    assert s.delivered(1)
    np.testing.assert_array_equal(StateStore(tmp_path, 3).residual(), r1)  # persisted
    s.commit(2, 2, b"u2", r1, r2, 2.0)
    np.testing.assert_array_equal(s.residual(), r2)
    assert s.dropped(2)
    np.testing.assert_array_equal(s.residual(), r1)  # back to before the dropped update
    assert not s.dropped(2) and not s.delivered(99)  # unknown sequence: nothing happens


def test_pending_survives_reopen_byte_for_byte(tmp_path: Path) -> None:
    s = StateStore(tmp_path, 2)
    z = np.zeros(2, np.float32)
    s.commit(4, 9, b"\x00payload\xff", z, z, 5.0)
    (tmp_path / "outbox" / ".tmp-5").mkdir()  # a crash mid-commit leaves this behind
    (e,) = StateStore(tmp_path, 2).pending()
    assert (e.seq, e.base_version, e.created_at, e.payload) == (4, 9, 5.0, b"\x00payload\xff")
    assert not (tmp_path / "outbox" / ".tmp-5").exists()
    assert StateStore(tmp_path, 2).progress().trained_version == 9


def test_corrupt_residual_refused(tmp_path: Path) -> None:
    s = StateStore(tmp_path, 3)
    np.save(tmp_path / "residual.npy", np.array([1.0, np.nan, 0.0], np.float32))
    with pytest.raises(DataError, match="NaN"):
        s.residual()
    np.save(tmp_path / "residual.npy", np.zeros(4, np.float32))
    with pytest.raises(DataError, match=r"expected float32 \(3,\)"):
        s.residual()
