"""deploy/monitoring as users deploy it: Debian's promtool checks the files and runs the alert
cases, and Debian's Prometheus scrapes a running demo fleet and answers every dashboard query.

Runs before the browser tests (file order), early in the demo's run."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from fleet.embedded_broker import free_port
from protocol.topics import update_topic
from tests.integration.console.conftest import DemoFleet, require_tool, wait_for
from transport import BrokerConfig, MqttLink

pytestmark = [pytest.mark.integration]

MONITORING = Path(__file__).resolve().parents[3] / "deploy" / "monitoring"


def _promtool(*args: str) -> str:
    exe = require_tool("/usr/bin/promtool", "Debian's prometheus (promtool)")
    done = subprocess.run([exe, *args], cwd=MONITORING, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_accepts_the_files_and_every_alert_fires_on_its_case() -> None:
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    assert "7 rules found" in _promtool("check", "rules", "alerts.yml")
    _promtool("test", "rules", "alerts.test.yml")
    tested = set(re_alertnames((MONITORING / "alerts.test.yml").read_text()))
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    assert tested == {r["alert"] for r in rules}, "every alert has a case in alerts.test.yml"


def re_alertnames(text: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if "alertname:" in line]


@pytest.fixture
def prometheus(demo_fleet: DemoFleet, tmp_path: Path) -> Iterator[str]:
    exe = require_tool("/usr/bin/prometheus", "Debian's prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}  # a short test
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [demo_fleet.metrics_address]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [exe, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 30, "Prometheus to be ready")
        yield url
    except BaseException:
        print((tmp_path / "prometheus.log").read_text()[-3000:])
        raise
    finally:
        proc.terminate()  # by its pid: the one we started
        proc.wait(10)
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", (expr, doc)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def _refused_probe(broker_url: str, fleet: str) -> None:
    """One garbage update on a demo device's topic: a refusal by reason, and an ingest time, to
    scrape (a secure-aggregation fleet sends no plain updates). The device ignores the Ack: its
    sequence number 0 is none of its updates."""
    link = MqttLink(BrokerConfig(url=broker_url, client_id="monitoring-probe"))
    link.start()
    try:
        assert link.wait_connected(10)
        link.publish(update_topic(fleet, "dev-005"), b"not an update", qos=1).wait(10)
    finally:
        link.stop()


def test_prometheus_answers_every_dashboard_query(demo_fleet: DemoFleet, prometheus: str) -> None:
    wait_for(lambda: _finite(_query(prometheus, 'up{job="fleetlearn-server"} == 1')), 30, "up")
    time.sleep(2)  # scraped before the probe: its refusal and ingest time are an increase
    _refused_probe(demo_fleet.broker_url, demo_fleet.app.config.fleet)
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = {f"{p['title']}: {t['expr']}": t["expr"] for p in dashboard["panels"]
               for t in p["targets"]}  # fmt: skip
    empty = dict(queries)
    deadline = time.monotonic() + 60  # the fleet's first cohorts: staleness, accuracy
    while empty and time.monotonic() < deadline:
        empty = {name: q for name, q in empty.items() if not _finite(_query(prometheus, q))}
        time.sleep(1)
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
    # the alert rules are loaded and evaluate without error against the real series
    with urllib.request.urlopen(prometheus + "/api/v1/rules", timeout=10) as r:
        rules = json.loads(r.read())["data"]["groups"][0]["rules"]
    assert len(rules) == 7
    wait_for(lambda: _rules_evaluated(prometheus), 15, "the rules' first evaluation")


def _rules_evaluated(url: str) -> bool:
    with urllib.request.urlopen(url + "/api/v1/rules", timeout=10) as r:
        rules = json.loads(r.read())["data"]["groups"][0]["rules"]
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    return not bad
