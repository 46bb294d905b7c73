"""`fleetlearn console --config server.toml` as an operator runs it: a real server process behind
a real Mosquitto, its console answering on 127.0.0.1 with what a device told the server, and a
clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fleet.embedded_broker import free_port
from protocol.messages import DeviceStatus, encode_status
from protocol.topics import status_topic
from tests.integration.console.conftest import wait_for
from tests.support.mosquitto import MosquittoHandle
from tests.unit.server.factory import make_artifacts, write_key
from transport import BrokerConfig, MqttLink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _fleet(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url + "/api/fleet", timeout=2) as r:
            doc: dict[str, object] = json.loads(r.read())
            return doc
    except OSError:
        return None


def test_the_console_command_serves_the_servers_view(
    tmp_path: Path, mosquitto_dev: MosquittoHandle
) -> None:
    make_artifacts(tmp_path / "artifacts", 6)
    write_key(tmp_path)
    (tmp_path / "server.toml").write_text(
        'fleet = "test"\nartifacts = "artifacts"\nsigning_key = "fleet.key"\n'
        f'state_dir = "state"\n[broker]\nurl = "{mosquitto_dev.url()}"\n'
        'client_id = "console-test-server"\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetlearn", "console", "--config", str(tmp_path / "server.toml"),
         "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    device = MqttLink(BrokerConfig(url=mosquitto_dev.url(), client_id="dev-a"))
    try:
        wait_for(lambda: _fleet(url) is not None or proc.poll() is not None, 60, "the console")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        device.start()
        assert device.wait_connected(10)
        status = DeviceStatus("dev-a", True, "training", 0, "eligible", {}, time.time())
        device.publish(status_topic("test", "dev-a"), encode_status(status), qos=1, retain=True)
        wait_for(lambda: (_fleet(url) or {}).get("devices_total") == 1, 20, "the device's status")
        doc = _fleet(url)
        assert doc is not None and doc["by_state"] == {"training": 1}
    finally:
        device.stop()
        proc.send_signal(signal.SIGTERM)  # the process we started, by its pid
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert f"console: {url}/fleet" in out
