"""The same short demo against a real Mosquitto started from broker-config's dev config."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.demo.report import validate_report
from tests.integration.demo.conftest import read_report, run_demo_cli
from tests.support.mosquitto import MosquittoHandle

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_on_mosquitto(
    tmp_path: Path, demo_env: dict[str, str], mosquitto_dev: MosquittoHandle
) -> None:
    url = mosquitto_dev.url()
    out = tmp_path / "out"
    text = run_demo_cli(
        [
            "--broker",
            url,
            "--devices",
            "8",
            "--duration",
            "45",
            "--target-accuracy",
            "0.85",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
        demo_env,
    )
    doc = read_report(out)
    validate_report(doc)
    assert doc["broker_url"] == url
    assert doc["best_accuracy"] >= 0.6, doc["timeline"][-3:]  # chance is 0.1
    assert doc["updates_accepted"] > 8
    assert f"broker {url}" in text and "final accuracy" in text
    # Every agent and the server spoke to Mosquitto itself (its log names each client).
    log = mosquitto_dev.log_text()
    assert "fleetlearn-server-demo" in log
    assert all(f"dev-{i:03d}" in log for i in range(8))
    assert mosquitto_dev.running  # the demo leaves an external broker alone
