"""The demo with --secure-aggregation: cohorts, masks and unmasking over a real broker, real ORT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.demo.report import validate_report
from tests.integration.demo.conftest import read_report, run_demo_cli
from tests.support.mosquitto import MosquittoHandle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = ["--strategy", "fedbuff", "--secure-aggregation", "--devices", "8", "--duration", "60",
        "--target-accuracy", "0.85", "--seed", "3"]  # fmt: skip


def _check(doc: dict[str, Any]) -> None:
    validate_report(doc)
    assert doc["best_accuracy"] >= 0.6, doc["timeline"][-3:]  # chance is 0.1
    # every accepted update was counted inside an unmasked cohort sum (no plain updates exist)
    assert doc["updates_accepted"] >= 6 and doc["versions"] > 1


def test_secure_demo_on_the_embedded_broker(tmp_path: Path, demo_env: dict[str, str]) -> None:
    text = run_demo_cli([*ARGS, "--out", str(tmp_path)], demo_env, timeout=150)
    assert "secure aggregation" in text
    _check(read_report(tmp_path))


def test_secure_demo_on_mosquitto(
    tmp_path: Path, demo_env: dict[str, str], mosquitto_dev: MosquittoHandle
) -> None:
    url = mosquitto_dev.url()
    run_demo_cli([*ARGS, "--broker", url, "--out", str(tmp_path)], demo_env, timeout=150)
    _check(read_report(tmp_path))
    assert mosquitto_dev.running
