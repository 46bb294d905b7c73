"""Regression tests for issue 15, defect 5: `fleetlearn broker enrol-device` reserved only
`fleet-server`, so a device enrolled under another aggregator's name got aggregator rights.
Device and server names must be disjoint at enrolment and in the generated ACLs."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from fleetlearn.provision_acl import render_acl
from fleetlearn.provision_cli import add_arguments, run
from fleetlearn.provision_dynsec import render_dynsec
from protocol.errors import ConfigError

needs_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None and not Path("/usr/bin/mosquitto_passwd").exists(),
    reason="mosquitto_passwd not installed",
)


def _broker(root: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(["--dir", str(root), *argv]))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _broker(tmp_path, "init-ca", "--fleet", "home")
    return tmp_path


@needs_passwd
def test_device_cannot_be_enrolled_under_any_aggregator_name(root: Path) -> None:
    _broker(root, "enrol-server", "fleet-server-2")
    with pytest.raises(ConfigError, match="aggregator"):
        _broker(root, "enrol-device", "fleet-server-2", "--fleet", "home", "--url", "mqtts://b")
    assert not (root / "devices" / "fleet-server-2").exists()
    with pytest.raises(ConfigError, match="aggregator"):
        _broker(root, "enrol-device", "fleet-server", "--fleet", "home", "--url", "mqtts://b")


@needs_passwd
def test_aggregator_cannot_be_enrolled_under_a_device_name(root: Path) -> None:
    _broker(root, "enrol-device", "hub-1", "--fleet", "home", "--url", "mqtts://b")
    with pytest.raises(ConfigError, match="device"):
        _broker(root, "enrol-server", "hub-1")


@needs_passwd
def test_acl_command_lists_every_enrolled_identity_and_keeps_them_disjoint(root: Path) -> None:
    _broker(root, "enrol-server", "agg-2")
    _broker(root, "enrol-device", "hub-1", "--fleet", "home", "--url", "mqtts://b", "--password")
    _broker(root, "acl", "--fleet", "home")
    doc = json.loads((root / "broker" / "dynamic-security.json").read_text())
    roles = {c["username"]: [r["rolename"] for r in c["roles"]] for c in doc["clients"]}
    assert roles == {
        "fleet-server": ["fleet-aggregator"],
        "agg-2": ["fleet-aggregator"],
        "hub-1": ["device-hub-1"],
    }
    with pytest.raises(ConfigError, match="disjoint"):
        _broker(root, "acl", "--fleet", "home", "--server-user", "hub-1")


def test_generators_refuse_a_name_that_is_both() -> None:
    with pytest.raises(ConfigError, match="disjoint"):
        render_acl(["home"], ["agg"], devices=["agg", "hub"])
    with pytest.raises(ConfigError, match="disjoint"):
        render_dynsec(["home"], ["agg"], ["agg"])
