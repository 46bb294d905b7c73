"""The real agent process: ORT training on digits, real Mosquitto, SIGKILL, broker restart."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.artifacts import load_artifacts
from protocol.messages import decode_vector
from tests.integration.agent.harness import (
    TestServer,
    start_agent,
    stop,
    write_agent_files,
)
from tests.support.artifacts import digits_arrays, exported_artifacts
from tests.support.mosquitto import MosquittoHandle, running_mosquitto

pytestmark = pytest.mark.integration


def outbox(tmp: Path) -> list[str]:
    folder = tmp / "state" / "outbox"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path, TestServer, MosquittoHandle]]:
    artifacts = exported_artifacts()
    x, y, _, _ = digits_arrays()
    with running_mosquitto(tmp_path / "broker") as broker:
        assert broker.port is not None
        config, key = write_agent_files(tmp_path, broker.port, artifacts, x[:400], y[:400])
        arts = load_artifacts(artifacts)
        server = TestServer(broker.port, arts.manifest.model_id, key)
        server.offer(1, arts.initial_weights, arts.manifest.digest)
        try:
            yield tmp_path, config, server, broker
        finally:
            server.close()


def test_sigkill_before_ack_resends_same_sequence(
    setup: tuple[Path, Path, TestServer, MosquittoHandle],
) -> None:
    tmp, config, server, _ = setup
    agent = start_agent(config)
    try:
        raw1, first = server.next_update(timeout=60)
        assert outbox(tmp) == [str(first.seq)]  # written before it was published
        os.kill(agent.pid, signal.SIGKILL)  # between outbox write and ack
        agent.wait(10)
        # The broker publishes the last will: the retained status says offline.
        assert server.wait_status(online=False, timeout=30).state == "offline"
    finally:
        out = stop(agent)
    assert outbox(tmp) == [str(first.seq)], out
    # The delta is real ORT training on digits: non-zero, finite, the configured codec.
    assert first.delta.codec["name"] == "int8" and first.local_steps == 20
    manifest = load_artifacts(exported_artifacts()).manifest
    assert np.abs(decode_vector(first.delta, manifest)).max() > 0

    server.forget()  # whatever the killed process sent must not count as the re-send
    report = tmp / "report.json"
    agent = start_agent(config, "--max-rounds", "1", "--report", str(report))
    try:
        raw2, again = server.next_update(timeout=60)
        assert (again.seq, raw2) == (first.seq, raw1)  # same sequence, byte-identical
        server.ack(again.seq)
        agent.wait(60)  # exits once the ack removed it
    finally:
        out = stop(agent)
    assert agent.returncode == 0, out
    assert outbox(tmp) == []
    summary = json.loads(report.read_text())
    assert summary["rounds"] == 1 and summary["torch_loaded"] is False, summary
    assert summary["backend"] == "onnxruntime"


def test_broker_restart_while_update_pending(
    setup: tuple[Path, Path, TestServer, MosquittoHandle],
) -> None:
    tmp, config, server, broker = setup
    report = tmp / "report.json"
    agent = start_agent(config, "--max-rounds", "1", "--report", str(report))
    try:
        _, first = server.next_update(timeout=60)
        broker.stop()
        time.sleep(1.0)
        assert outbox(tmp) == [str(first.seq)]  # still pending during the outage
        broker.start()
        _, again = server.next_update(timeout=60)  # re-sent after the agent reconnected
        assert again.seq == first.seq
        server.ack(again.seq)
        agent.wait(60)
    finally:
        out = stop(agent)
    assert agent.returncode == 0, out
    assert outbox(tmp) == []
    summary = json.loads(report.read_text())
    assert summary["torch_loaded"] is False and summary["bytes_published"] > 0
