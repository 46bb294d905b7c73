"""The admin identity that sends live changes: the dynamic-security control topic and nothing
else, and never the name of a device or an aggregator."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from fleetlearn.provision_cli import add_arguments, run
from fleetlearn.provision_dynsec import ADMIN_ROLE, CONTROL_TOPIC, RESPONSE_TOPIC, render_dynsec
from protocol.errors import ConfigError

needs_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None and not Path("/usr/bin/mosquitto_passwd").exists(),
    reason="mosquitto_passwd not installed",
)


def _broker(root: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(["--dir", str(root), *argv]))


def test_admin_role_grants_the_control_topic_only() -> None:
    doc = json.loads(render_dynsec(["home"], ["fleet-server"], ["dev-a"], admins=["ops"]))
    role = next(r for r in doc["roles"] if r["rolename"] == ADMIN_ROLE)
    assert {(a["acltype"], a["topic"]) for a in role["acls"]} == {
        ("publishClientSend", CONTROL_TOPIC),
        ("subscribePattern", RESPONSE_TOPIC),
        ("publishClientReceive", RESPONSE_TOPIC),
    }
    client = next(c for c in doc["clients"] if c["username"] == "ops")
    assert client["roles"] == [{"rolename": ADMIN_ROLE}]
    for other in doc["roles"]:  # no one else may touch the plugin
        if other["rolename"] != ADMIN_ROLE:
            assert not any(a["topic"].startswith("$CONTROL") for a in other["acls"])


def test_no_admin_no_admin_role() -> None:
    doc = json.loads(render_dynsec(["home"], ["fleet-server"], ["dev-a"]))
    assert ADMIN_ROLE not in {r["rolename"] for r in doc["roles"]}


def test_admin_name_must_be_its_own() -> None:
    with pytest.raises(ConfigError, match="admin"):
        render_dynsec(["home"], ["fleet-server"], ["dev-a"], admins=["dev-a"])
    with pytest.raises(ConfigError, match="admin"):
        render_dynsec(["home"], ["fleet-server"], ["dev-a"], admins=["fleet-server"])


@needs_passwd
def test_enrolment_keeps_admins_devices_and_aggregators_apart(tmp_path: Path) -> None:
    _broker(tmp_path, "init-ca", "--fleet", "home")
    _broker(tmp_path, "acl", "--fleet", "home")
    _broker(tmp_path, "enrol-admin")
    url = "mqtts://b:8883"
    with pytest.raises(ConfigError, match="admin"):
        _broker(tmp_path, "enrol-device", "fleet-admin", "--fleet", "home", "--url", url)
    _broker(tmp_path, "enrol-device", "dev-a", "--fleet", "home", "--url", url)
    with pytest.raises(ConfigError, match="device or aggregator"):
        _broker(tmp_path, "enrol-admin", "dev-a")
    with pytest.raises(ConfigError, match="admin"):
        _broker(tmp_path, "enrol-server", "fleet-admin")
    doc = json.loads((tmp_path / "broker" / "dynamic-security.json").read_text())
    admin = next(c for c in doc["clients"] if c["username"] == "fleet-admin")
    assert admin["roles"] == [{"rolename": ADMIN_ROLE}] and "password" in admin


def test_live_needs_a_broker_url_and_an_enrolled_admin(tmp_path: Path) -> None:
    _broker(tmp_path, "init-ca", "--fleet", "home")
    with pytest.raises(ConfigError, match="--broker"):
        _broker(tmp_path, "revoke-device", "dev-a", "--live")
    with pytest.raises(ConfigError, match="enrol-admin"):
        _broker(tmp_path, "revoke-device", "dev-a", "--live", "--broker", "mqtts://b:8883")
    assert not (tmp_path / "ca" / "issued.json").read_text().count("dev-a")  # nothing revoked
