"""A short demo on the embedded broker: real agents, real server, real ORT training."""

from __future__ import annotations

import gc
import io
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from fleet.demo.report import validate_report
from fleet.demo.run import DemoOptions, run_demo
from fleet.demo.teardown import port_is_free
from tests.integration.demo.conftest import REPO, read_report

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_demo_learns_reports_and_leaves_nothing_behind(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    threads_before = set(threading.enumerate())
    out = io.StringIO()
    result = run_demo(
        DemoOptions(devices=8, duration_s=45.0, target_accuracy=0.85, out=tmp_path, seed=3),
        console=Console(file=out, width=100),
    )
    doc = read_report(tmp_path)
    validate_report(doc)
    assert doc["best_accuracy"] >= 0.6, doc["timeline"][-3:]  # chance is 0.1
    assert doc["updates_accepted"] > 8 and doc["versions"] > 1
    assert doc["bytes_per_update"] < doc["float32_bytes_per_update"] / 3  # int8 + framing
    assert len(doc["devices"]) == 8
    assert sum(d["updates_sent"] for d in doc["devices"]) >= doc["updates_accepted"]
    assert (tmp_path / "accuracy.png").stat().st_size > 5_000
    assert "summary" in out.getvalue() and "final accuracy" in out.getvalue()
    # Clean shutdown: every thread the demo started has ended, the broker's port is free.
    port = int(re.search(r":(\d+)$", doc["broker_url"]).group(1))  # type: ignore[union-attr]
    assert port_is_free(port)
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(threading.enumerate()) - threads_before
    assert not result.interrupted
    gc.collect()  # a socket left to the collector would warn here (an error), not in a later test


def test_ctrl_c_stops_the_fleet_and_frees_the_port(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetlearn",
            "demo",
            "--devices",
            "6",
            "--duration",
            "60",
            "--target-accuracy",
            "0.99",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = None
        lines = []
        for line in proc.stdout:  # wait until the fleet runs and has shown progress
            lines.append(line)
            if m := re.search(r"broker mqtt://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
            if port and re.search(r"\] v\d+ +acc", line):
                break
        assert port is not None, "".join(lines)
        assert not port_is_free(port)  # the embedded broker listens
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    assert port_is_free(port)
    doc = read_report(tmp_path)  # a partial run still leaves its report
    validate_report(doc)
    assert doc["stopped_by"] == "interrupted"
