"""Operator tooling for the broker, part 3: password entries and enrolling one device.

Password entries are written by `mosquitto_passwd` itself, so the hash format is always the one
the installed Mosquitto reads; plaintext never appears on a command line.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetlearn.provision import CaFiles, issue_client_cert, write_private
from fleetlearn.provision_acl import DEFAULT_SERVER_USER, render_acl
from fleetlearn.provision_dynsec import passwd_hashes, render_dynsec
from fleetlearn.provision_identity import enrolment, write_device_identity
from protocol import topics
from protocol.errors import ConfigError

__all__ = [
    "DEFAULT_ADMIN_USER",
    "DeviceBundle",
    "enrol_admin",
    "enrol_device",
    "enrol_server",
    "enrolled_admins",
    "enrolled_devices",
    "enrolled_servers",
    "remove_passwords",
    "render_agent_toml",
    "set_passwords",
    "write_broker_security",
]


DEFAULT_ADMIN_USER = "fleet-admin"  # the operator's identity for live changes; never a device


@dataclass(frozen=True)
class DeviceBundle:
    device_id: str
    dir: Path
    cert: Path | None
    key: Path | None
    password: str | None
    agent_toml: Path
    identity_key: Path | None = None  # secure aggregation (fleetlearn/provision_identity.py)


def _mosquitto_passwd() -> str:
    exe = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
    )
    if exe is None:
        raise ConfigError(
            "mosquitto_passwd not found: install Mosquitto (apt-get install mosquitto)"
        )
    return exe


def set_passwords(passwd_file: Path, entries: Mapping[str, str]) -> None:
    """Add or replace password entries, hashed by `mosquitto_passwd -U` (never on argv)."""
    for user, password in entries.items():
        if ":" in user or "\n" in user or "\n" in password or not password:
            raise ConfigError(f"password entry for {user!r}: no ':' or newline, non-empty password")
    plain = passwd_file.with_name(f".{passwd_file.name}.plain")
    write_private(plain, "".join(f"{u}:{p}\n" for u, p in entries.items()).encode())
    try:
        subprocess.run([_mosquitto_passwd(), "-U", str(plain)], check=True, capture_output=True)
        hashed = dict(_entries(plain.read_text()))
    except subprocess.CalledProcessError as exc:
        raise ConfigError(
            f"mosquitto_passwd -U failed: {exc.stderr.decode(errors='replace')}"
        ) from exc
    finally:
        plain.unlink(missing_ok=True)
    current = dict(_entries(passwd_file.read_text())) if passwd_file.exists() else {}
    current.update(hashed)
    write_private(passwd_file, "".join(f"{u}:{h}\n" for u, h in current.items()).encode(), 0o640)


def remove_passwords(passwd_file: Path, users: Sequence[str]) -> list[str]:
    """Delete entries (`mosquitto_passwd -D`); returns the users that had one."""
    present = dict(_entries(passwd_file.read_text())) if passwd_file.exists() else {}
    removed = [u for u in users if u in present]
    for user in removed:
        subprocess.run([_mosquitto_passwd(), "-D", str(passwd_file), user], check=True)
    return removed


def _entries(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            user, _, rest = line.partition(":")
            out.append((user, rest))
    return out


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_agent_toml(
    *,
    device_id: str,
    fleet: str,
    broker_url: str,
    password: str | None,
    with_cert: bool,
    model_id: str = "REPLACE-WITH-MANIFEST-DIGEST",
    root: str = "/var/lib/fleetlearn",
    fleet_public_key: str = "fleet.pub",
) -> str:
    """Skeleton of the agent's config (keys of agent/config.py); paths relative to the file."""
    broker = [f"url = {_toml_str(broker_url)}", 'ca_file = "ca.crt"']
    if with_cert:
        broker += ['cert_file = "device.crt"', 'key_file = "device.key"']
    if password is not None:
        broker += [f"username = {_toml_str(device_id)}", f"password = {_toml_str(password)}"]
    return "\n".join(
        [
            f"# fleetlearn agent config for device {device_id!r}, written by",
            "# `fleetlearn broker enrol-device`. Contains a secret when a password is set: 0600.",
            f"device_id = {_toml_str(device_id)}",
            f"fleet = {_toml_str(fleet)}",
            f"model_id = {_toml_str(model_id)}",
            f"data_dir = {_toml_str(root + '/data')}",
            f"artifacts_dir = {_toml_str(root + '/artifacts')}",
            f"state_dir = {_toml_str(root + '/state')}",
            f"fleet_public_key = {_toml_str(fleet_public_key)}  # `fleetlearn keys` output",
            "",
            "[broker]",
            *broker,
            "keepalive = 30",
            'protocol = "auto"',
            "",
            "[secure_aggregation]",
            "enabled = false  # true: join cohorts (must match the server)",
            "# identity.key, identity.cert and enrolment.pub from enrolment sit beside this file",
            "",
        ]
    )


def enrol_device(
    root: Path,
    device_id: str,
    *,
    fleet: str,
    broker_url: str,
    cert: bool = True,
    password: bool = False,
    reserved: Sequence[str] = (DEFAULT_SERVER_USER,),
) -> DeviceBundle:
    """Everything one device needs, in root/devices/<id>/ (copy that folder to the device)."""
    topics.validate_device_id(device_id)
    topics.validate_fleet(fleet)
    if device_id in {*reserved, *enrolled_servers(root)}:
        raise ConfigError(
            f"device id {device_id!r} is reserved for an aggregator: device and server names "
            "must be disjoint (a device under an aggregator's name gets its rights)"
        )
    if device_id in {DEFAULT_ADMIN_USER, *enrolled_admins(root)}:
        raise ConfigError(
            f"device id {device_id!r} is an admin identity: a device under an admin's name "
            "would get the right to change every identity's rights"
        )
    if not cert and not password:
        raise ConfigError("enrol-device: choose a certificate, a password, or both")
    ca = CaFiles(root / "ca")
    out = root / "devices" / device_id
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert, out / "ca.crt")
    cert_path = key_path = None
    if cert:
        cert_path, key_path = issue_client_cert(ca, device_id, out)
    secret = None
    if password:
        secret = secrets.token_urlsafe(24)
        set_passwords(root / "broker" / "passwd", {device_id: secret})
    identity_key, _, _ = write_device_identity(enrolment(ca.dir, fleet), device_id, out)
    toml = render_agent_toml(
        device_id=device_id, fleet=fleet, broker_url=broker_url, password=secret, with_cert=cert
    )
    write_private(out / "agent.toml", toml.encode())
    return DeviceBundle(
        device_id, out, cert_path, key_path, secret, out / "agent.toml", identity_key
    )


def enrolled_servers(root: Path) -> list[str]:
    """Aggregator identities: the default one plus every `enrol-server` (root/servers/<name>)."""
    found = sorted(p.name for p in (root / "servers").glob("*") if p.is_dir())
    return [DEFAULT_SERVER_USER, *(n for n in found if n != DEFAULT_SERVER_USER)]


def enrolled_devices(root: Path) -> list[str]:
    """Device identities: every `enrol-device` (root/devices/<name>)."""
    return sorted(p.name for p in (root / "devices").glob("*") if p.is_dir())


def enrolled_admins(root: Path) -> list[str]:
    """Admin identities (live changes to the plugin): every `enrol-admin` (root/admins/<name>)."""
    return sorted(p.name for p in (root / "admins").glob("*") if p.is_dir())


def enrol_server(root: Path, name: str) -> tuple[Path, str]:
    """An aggregator's client certificate and password in root/servers/<name>/."""
    topics.validate_device_id(name)
    if name in enrolled_devices(root):
        raise ConfigError(
            f"{name!r} is an enrolled device: device and server names must be disjoint "
            "(revoke the device first, or choose another aggregator name)"
        )
    if name in enrolled_admins(root):
        raise ConfigError(f"{name!r} is an admin identity: choose another aggregator name")
    return _enrol_identity(root, root / "servers" / name, name)


def enrol_admin(root: Path, name: str = DEFAULT_ADMIN_USER) -> tuple[Path, str]:
    """The operator's identity for live enrol/revoke: certificate and password in
    root/admins/<name>/, the plugin's admin role (control topic only) in the generated file."""
    topics.validate_device_id(name)
    if name in {*enrolled_devices(root), *enrolled_servers(root)}:
        raise ConfigError(
            f"{name!r} is already a device or aggregator: an admin needs its own identity "
            "(never a device's: it may change every identity's rights)"
        )
    return _enrol_identity(root, root / "admins" / name, name)


def _enrol_identity(root: Path, out: Path, name: str) -> tuple[Path, str]:
    """A client certificate (CN = name) and a password entry; both go into out/."""
    cert, _ = issue_client_cert(CaFiles(root / "ca"), name, out, stem="client")
    secret = secrets.token_urlsafe(24)
    set_passwords(root / "broker" / "passwd", {name: secret})
    write_private(out / "password", (secret + "\n").encode())
    shutil.copyfile(CaFiles(root / "ca").cert, out / "ca.crt")
    return cert, secret


def write_broker_security(
    root: Path, fleets: list[str] | None = None, extra_servers: list[str] | None = None
) -> list[Path]:
    """Write broker/acl and broker/dynamic-security.json for every enrolled identity.

    `fleets` and `extra_servers` (aggregator names provisioned outside `enrol-server`) are
    remembered in broker/fleets and broker/extra-servers; without `fleets` the remembered ones
    are used (nothing is written before the first `fleetlearn broker acl`). Returns the files."""
    broker = root / "broker"
    remembered, remembered_servers = broker / "fleets", broker / "extra-servers"
    if fleets is None:
        if not remembered.exists():
            return []
        fleets = remembered.read_text().split()
    if extra_servers is None and remembered_servers.exists():
        extra_servers = remembered_servers.read_text().split()
    for fleet in fleets:
        topics.validate_fleet(fleet)
    enrolled = enrolled_servers(root)
    extra = sorted({s for s in extra_servers or [] if s not in enrolled})
    servers = [*enrolled, *extra]
    devices = enrolled_devices(root)
    acl = render_acl(fleets, servers, devices)
    hashes = passwd_hashes(broker / "passwd")
    dynsec = render_dynsec(fleets, servers, devices, hashes, admins=enrolled_admins(root))
    broker.mkdir(parents=True, exist_ok=True)
    remembered.write_text("\n".join(fleets) + "\n")
    remembered_servers.write_text("".join(f"{n}\n" for n in extra))
    (broker / "acl").write_text(acl)
    write_private(broker / "dynamic-security.json", dynsec.encode(), 0o640)
    return [broker / "acl", broker / "dynamic-security.json"]
