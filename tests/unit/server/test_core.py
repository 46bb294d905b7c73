"""ServerCore recovery in-process: checkpoint + log replay, torn tail, batched commit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol.errors import DataError
from server.core import ServerCore
from server.durability import CHECKPOINT_NAME
from server.strategies import FedAsync, FedAvg, FedBuff
from tests.unit.server.factory import make_manifest, update_bytes

M = make_manifest(6)


def _core(state: Path, strategy: object | None = None, every: int = 3) -> ServerCore:
    s = strategy or FedBuff(buffer_size=2, momentum=0.5)
    core = ServerCore(M, np.zeros(6, np.float32), s, state, checkpoint_every=every)  # type: ignore[arg-type]
    core.recover()
    return core


def _feed(core: ServerCore, count: int, start: int = 1) -> None:
    for seq in range(start, start + count):
        delta = np.full(6, float(seq), np.float32)
        assert core.handle("dev-1", update_bytes(M, delta, seq=seq, base=core.version)).ack.accepted
        core.maybe_checkpoint()


def test_restart_replays_log_after_checkpoint(tmp_path: Path) -> None:
    core = _core(tmp_path)
    _feed(core, 7)  # checkpoints after 3 and 6; record 7 only in the log, buffered in FedBuff
    model, version, pending = core.model.copy(), core.version, core.strategy.pending
    core.close()
    again = _core(tmp_path)
    assert again.version == version == 3 and again.strategy.pending == pending == 1
    np.testing.assert_array_equal(again.model, model)
    assert again.sequences["dev-1"][0] == 7
    _feed(again, 1, start=8)  # the buffered update and the new one make a step
    assert again.version == 4


def test_torn_tail_dropped_and_reported(tmp_path: Path) -> None:
    core = _core(tmp_path, FedAsync(alpha=1.0), every=100)
    _feed(core, 3)
    core.close()
    segment = sorted((tmp_path / "log").glob("*.log"))[-1]
    segment.write_bytes(segment.read_bytes()[:-5])  # the last record was being written
    again = ServerCore(M, np.zeros(6, np.float32), FedAsync(alpha=1.0), tmp_path)
    report = again.recover()
    assert report.tail is not None and report.replayed == 2 and again.version == 2
    np.testing.assert_array_equal(again.model, np.full(6, 3.0, np.float32))  # 1 + 2, not + 3
    assert again.sequences["dev-1"][0] == 2


def test_batched_commit_matches_per_update(tmp_path: Path) -> None:
    a, b = _core(tmp_path / "a"), _core(tmp_path / "b")
    payloads = [update_bytes(M, np.full(6, i, np.float32), seq=i) for i in range(1, 6)]
    for p in payloads:
        a.handle("dev-1", p)
    outs = [b.submit("dev-1", p) for p in payloads]
    b.commit()
    assert all(o.ack.accepted for o in outs)
    np.testing.assert_array_equal(a.model, b.model)


def test_fedavg_deadline_step_is_logged_and_replayed(tmp_path: Path) -> None:
    core = _core(tmp_path, FedAvg(round_size=5, deadline_s=10), every=100)
    core.tick(0.0)
    core.handle("dev-1", update_bytes(M, np.ones(6, np.float32), seq=1, samples=3))
    assert core.tick(11.0) and core.version == 1
    core.commit()
    core.close()
    again = _core(tmp_path, FedAvg(round_size=5, deadline_s=10))
    assert again.version == 1
    np.testing.assert_array_equal(again.model, np.ones(6, np.float32))


def test_state_of_another_model_or_strategy_refused(tmp_path: Path) -> None:
    _core(tmp_path).close()
    with pytest.raises(DataError, match="strategy"):
        _core(tmp_path, FedAsync())
    other = make_manifest(8)
    with pytest.raises(DataError, match="model"):
        ServerCore(other, np.zeros(8, np.float32), FedBuff(), tmp_path).recover()


def test_commit_start_keeps_the_state_it_covers_while_the_next_batch_is_applied(
    tmp_path: Path,
) -> None:
    """Pipelined group commit: a Commit's model and version are those of its batch, whatever
    is submitted after it, and waiting for it makes exactly that batch durable."""
    core = _core(tmp_path, FedAsync(alpha=1.0), every=10**6)
    one = update_bytes(M, np.full(6, 1.0, np.float32), seq=1, base=0)
    assert core.submit("dev-1", one).ack.accepted
    first = core.commit_start()
    two = update_bytes(M, np.full(6, 2.0, np.float32), seq=2, base=1)
    assert core.submit("dev-1", two).ack.accepted  # the next batch, while the fsync runs
    assert core.version == 2
    first.wait()
    assert first.version == 1
    np.testing.assert_array_equal(first.model, np.full(6, 1.0))  # by hand: 0 + 1 * 1
    np.testing.assert_array_equal(core.model, np.full(6, 3.0))  # 1 + 2, not yet durable
    core.commit_start().wait()
    core.close()
    again = _core(tmp_path, FedAsync(alpha=1.0), every=10**6)
    assert again.version == 2
    np.testing.assert_array_equal(again.model, np.full(6, 3.0))
    again.close()


def test_a_checkpoint_while_a_commit_is_in_flight_waits_for_it(tmp_path: Path) -> None:
    """Pipelined group commit: the service loop checkpoints after finishing batch N while batch
    N+1's fsync is queued. The checkpoint's segment switch must wait for that write (a closed
    file under the writer once failed every later append with EBADF)."""
    core = _core(tmp_path, FedAsync(alpha=1.0), every=10**6)
    for seq in (1, 2):
        payload = update_bytes(M, np.full(6, float(seq), np.float32), seq=seq, base=seq - 1)
        assert core.submit("dev-1", payload).ack.accepted
        in_flight = core.commit_start()
    core.checkpoint()  # nothing appended since the last commit_start, which may still run
    in_flight.wait()
    three = update_bytes(M, np.full(6, 3.0, np.float32), seq=3, base=2)
    assert core.submit("dev-1", three).ack.accepted
    core.commit()
    core.close()
    again = _core(tmp_path, FedAsync(alpha=1.0), every=10**6)
    assert again.version == 3
    np.testing.assert_array_equal(again.model, np.full(6, 6.0))  # by hand: 1 + 2 + 3
    again.close()


def _checkpoints(core: ServerCore, count: int) -> list[tuple[int, int]]:
    """(seq, checkpoint size before it) for each checkpoint `maybe_checkpoint` took."""
    done = []
    size = (core.state_dir / CHECKPOINT_NAME).stat().st_size
    for seq in range(1, count + 1):
        delta = np.full(6, float(seq), np.float32)
        assert core.handle("dev-1", update_bytes(M, delta, seq=seq, base=core.version)).ack.accepted
        if core.maybe_checkpoint():
            done.append((seq, size))
            size = (core.state_dir / CHECKPOINT_NAME).stat().st_size
    return done


def _core_with_ratio(state: Path, ratio: float) -> ServerCore:
    core = ServerCore(
        M, np.zeros(6, np.float32), FedAsync(), state, checkpoint_every=3,
        checkpoint_log_ratio=ratio,
    )  # fmt: skip
    core.recover()
    return core


def test_the_log_ratio_spaces_checkpoints_by_bytes_then_by_ten_times_the_records(
    tmp_path: Path,
) -> None:
    """With a ratio of 4 a checkpoint waits for the first record at which the log since the last
    one holds 4x that checkpoint's bytes (and at least checkpoint_every records); a ratio no
    log reaches falls back to 10 x checkpoint_every records; ratio 0 is the record count."""
    record = len(update_bytes(M, np.ones(6, np.float32)))  # the body; the meta adds < 100
    plain = _core_with_ratio(tmp_path / "a", 0.0)
    assert [seq for seq, _ in _checkpoints(plain, 12)] == [3, 6, 9, 12]
    plain.close()
    ratio = _core_with_ratio(tmp_path / "b", 4.0)
    done, last = _checkpoints(ratio, 40), 0
    assert len(done) >= 2
    for seq, size in done:
        gap = seq - last
        assert gap > 3 and (gap - 1) * record < 4 * size <= gap * (record + 100)
        last = seq
    ratio.close()
    capped = _core_with_ratio(tmp_path / "c", 1000.0)
    assert [seq for seq, _ in _checkpoints(capped, 35)] == [30]
    capped.close()
