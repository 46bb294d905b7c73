"""The agent on the production-like broker: TLS, client certificate, ACL by identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.artifacts import load_artifacts
from tests.integration.agent.harness import DEVICE, FLEET, TestServer, start_agent, stop
from tests.integration.agent.harness import write_agent_files as write_files
from tests.support.artifacts import digits_arrays, exported_artifacts
from tests.support.mosquitto import running_mosquitto

pytestmark = pytest.mark.integration


def test_round_over_tls_with_client_certificate(tmp_path: Path) -> None:
    artifacts = exported_artifacts()
    x, y, _, _ = digits_arrays()
    with running_mosquitto(tmp_path / "broker", "prod", fleet=FLEET, devices=[DEVICE]) as broker:
        device = broker.client_config(DEVICE)  # files the provisioning made for this device
        table = {
            "url": device.url,
            "ca_file": str(device.ca_file),
            "cert_file": str(device.cert_file),
            "key_file": str(device.key_file),
        }
        config, key = write_files(tmp_path, table, artifacts, x[:300], y[:300])
        arts = load_artifacts(artifacts)
        server = TestServer(broker.server_config(), arts.manifest.model_id, key)
        report = tmp_path / "report.json"
        try:
            server.offer(1, arts.initial_weights, arts.manifest.digest)
            agent = start_agent(config, "--max-rounds", "1", "--report", str(report))
            try:
                _, update = server.next_update(timeout=60)  # the ACL let the device publish it
                server.ack(update.seq)  # ... and deliver the server's ack to it
                agent.wait(60)
            finally:
                out = stop(agent)
        finally:
            server.close()
    assert agent.returncode == 0, out
    assert json.loads(report.read_text())["rounds"] == 1
    assert "mqtts://" in device.url
