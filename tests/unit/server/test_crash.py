"""Crash test: SIGKILL a server process at random points; every acknowledged update survives,
is applied exactly once, nothing unacknowledged-and-unlogged is applied, and the recovered model
equals a clean replay. Kills come from named fault points (between log append and fsync, after
fsync before apply, after apply before Ack, between checkpoint write and rename, after rename)
and from the test itself at random moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from server.faults import FAULT_ENV, POINTS
from server.privacy import epsilon
from tests.unit.server.crash_driver import DP, DP_SIGMA, MANIFEST, N_PARAMS
from tests.unit.server.factory import update_bytes

ROOT = Path(__file__).resolve().parents[3]
DEVICES = ("dev-a", "dev-b", "dev-c")
UPDATES = 24
TRIALS = 24


def _start(state: Path, mode: str, fault: str | None) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.server.crash_driver", "serve", str(state), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _send(proc: subprocess.Popen[str], device: str, payload: bytes) -> list[str] | None:
    """Send one update; the ack's fields, or None if the server died first."""
    stdin: IO[str] = proc.stdin  # type: ignore[assignment]
    stdout: IO[str] = proc.stdout  # type: ignore[assignment]
    try:
        stdin.write(f"{device} {payload.hex()}\n")
        stdin.flush()
    except BrokenPipeError:
        return None
    line = stdout.readline()
    return line.split() if line else None


def _close_pipes(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:  # a dead reader: the buffered line cannot be flushed, and need not be
            pass


def _delta(index: int, mode: str) -> np.ndarray:
    if mode == "count":
        d = np.zeros(N_PARAMS, np.float32)
        d[index] = 1.0  # update #index counts in coordinate #index
        return d
    return np.random.default_rng(index).standard_normal(N_PARAMS).astype(np.float32)


def _trial(tmp: Path, trial: int, mode: str | None = None) -> dict[str, Any]:
    rng = random.Random(trial)
    mode = mode or ("count", "buff", "robust")[trial % 3]
    state = tmp / f"state-{trial}"
    seqs = dict.fromkeys(DEVICES, 0)
    outbox: list[tuple[int, str, int, bytes]] = []  # (index, device, seq, payload) unacked
    acked: dict[tuple[str, int], int] = {}  # (device, seq) -> index, accepted acks only
    seen_version, kills, index = 0, 0, 0
    # first run always has a fault armed; later runs maybe one, or a kill from outside
    fault: str | None = f"{rng.choice(POINTS)}:{rng.randint(1, 6)}"
    while index < UPDATES or outbox:
        proc = _start(state, mode, fault)
        external_kill_after = rng.randint(1, 8) if fault is None and rng.random() < 0.5 else None
        sent_this_run, died = 0, False
        while (index < UPDATES or outbox) and not died:
            if not outbox:  # the "agent" makes a new update on the version it last saw
                device = DEVICES[index % len(DEVICES)]
                seqs[device] += 1
                base = max(0, seen_version - rng.randint(0, 2))
                payload = update_bytes(
                    MANIFEST,
                    _delta(index, mode),
                    device=device,
                    seq=seqs[device],
                    base=base,
                    samples=1 + index % 5,
                )
                outbox.append((index, device, seqs[device], payload))
                index += 1
            i, device, seq, payload = outbox[0]
            if external_kill_after is not None and sent_this_run == external_kill_after:
                stdin: IO[str] = proc.stdin  # type: ignore[assignment]
                stdin.write(f"{device} {payload.hex()}\n")  # kill with a request in flight
                stdin.flush()
                os.kill(proc.pid, signal.SIGKILL)
                died = True
                break
            ack = _send(proc, device, payload)
            if ack is None:
                died = True
                break
            _, a_dev, a_seq, accepted, version = ack
            assert (a_dev, int(a_seq)) == (device, seq), "ack for another update"
            assert int(version) >= seen_version, "version went backwards"
            seen_version = int(version)
            if accepted == "1":
                acked[(device, seq)] = i
            outbox.pop(0)
            sent_this_run += 1
        if died:
            kills += 1
            assert proc.wait(timeout=30) == -signal.SIGKILL
        else:
            proc.stdin.close()  # type: ignore[union-attr]
            assert proc.wait(timeout=30) == 0
        _close_pipes(proc)
        fault = f"{rng.choice(POINTS)}:{rng.randint(1, 8)}" if rng.random() < 0.4 else None
    out = subprocess.run(
        [sys.executable, "-m", "tests.unit.server.crash_driver", "dump", str(state), mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    applied = [tuple(x) for x in result["applied"]]
    assert len(applied) == len(set(applied)), "an update was applied twice"
    assert set(applied) == set(acked), "applied set != acknowledged set"
    assert result["version"] >= seen_version
    np.testing.assert_array_equal(result["model"], result["replay_model"])
    assert result["version"] == result["replay_version"]
    if mode == "dp":  # budget: one flush per version, never re-spent or forgotten on restart
        assert result["dp_flushes"] == result["version"]
        assert result["dp_epsilon"] == epsilon(DP_SIGMA, result["version"], DP.delta)
    if mode == "count":  # independent of the log: each acked update counted exactly once
        expected = np.zeros(N_PARAMS, np.float32)
        expected[list(acked.values())] = 1.0
        np.testing.assert_array_equal(np.array(result["model"], np.float32), expected)
    return {"kills": kills, "applied": len(applied)}


@pytest.mark.slow
def test_sigkill_at_random_points_keeps_exactly_once(tmp_path: Path) -> None:
    stats = [_trial(tmp_path, t) for t in range(TRIALS)]
    total_kills = sum(s["kills"] for s in stats)
    print(
        f"crash test: {TRIALS} trials, {total_kills} SIGKILLs, "
        f"{sum(s['applied'] for s in stats)} updates applied exactly once"
    )
    assert total_kills >= TRIALS  # every trial was killed at least once


DP_TRIALS = 4


@pytest.mark.slow
def test_sigkill_with_privacy_neither_respends_nor_forgets_budget(tmp_path: Path) -> None:
    """FedBuff + DP with a secret random noise key: after random kills the recovered model equals
    a clean replay with that key (noise replayed bit for bit) and flushes spent == version."""
    stats = [_trial(tmp_path, 1000 + t, "dp") for t in range(DP_TRIALS)]
    assert sum(s["kills"] for s in stats) >= DP_TRIALS
