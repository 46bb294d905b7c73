"""Operator tooling for the broker, part 4: Mosquitto's dynamic-security plugin configuration.

Why not acl_file: Mosquitto 2.0's acl_file never refuses a SUBSCRIBE (read access is checked
only at delivery). A device subscribed to `$share/<group>/fl/<fleet>/device/+/update` then takes
a round-robin turn in the aggregators' group, the delivery to it is denied, and that update is
lost (issue 15: 1 hostile member halved delivery). The dynamic-security plugin checks SUBSCRIBE
(`subscribePattern` / `subscribeLiteral`) separately from delivery (`publishClientReceive`), and
denies what is not granted, so the hostile SUBSCRIBE is answered "not authorised" and the
group holds aggregators only.

Mosquitto 2.0.11's plugin does not substitute %u in ACL topics, so each device gets its own
role with literal topics. The file is generated from the same grants as the acl_file
(fleetlearn/provision_acl.py) and from mosquitto_passwd's file: both use PBKDF2-SHA512 with the
same salt/iterations/hash encoding, so `$7$` entries convert without knowing any password.
Clients without a password entry (certificate identities on the 8883 listener) are listed
without one: they cannot log in by password, but their ACLs apply. The plugin reads the file
at start-up only (SIGHUP does not reload it); a running broker takes changes on its control
topic, sent by an admin identity (`enrol-admin`, role ADMIN_ROLE) through
fleetlearn/dynsec_live.py. The file stays the source of truth for every restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetlearn.provision_acl import Grant, check_disjoint, device_grants, server_grants
from protocol import topics
from protocol.errors import ConfigError

__all__ = [
    "ADMIN_ROLE",
    "CONTROL_TOPIC",
    "RESPONSE_TOPIC",
    "SERVER_ROLE",
    "device_acls",
    "device_role",
    "passwd_hashes",
    "render_dynsec",
]

SERVER_ROLE = "fleet-aggregator"
ADMIN_ROLE = "fleet-admin"
_DEVICE_ROLE_PREFIX = "device-"

# The plugin's command topic and the topic it answers on (QoS 0, to every subscriber).
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

# An admin may change every identity's rights: it gets the control topic and nothing else
# (no fleet topics, so an admin credential cannot forge offers or acks).
_ADMIN_ACLS = [
    {"acltype": "publishClientSend", "topic": CONTROL_TOPIC, "allow": True},
    {"acltype": "subscribePattern", "topic": RESPONSE_TOPIC, "allow": True},
    {"acltype": "publishClientReceive", "topic": RESPONSE_TOPIC, "allow": True},
]

# Deny by default. A denied SUBSCRIBE is answered 0x87 (v5) / 0x80 (3.1.1).
_DEFAULTS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


def _acls(grants: Sequence[Grant], *, shared: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for g in grants:
        if g.access in ("read", "readwrite"):
            out.append({"acltype": "subscribePattern", "topic": g.topic, "allow": True})
            out.append({"acltype": "publishClientReceive", "topic": g.topic, "allow": True})
            if shared:  # aggregators may share the stream: $share/<any group>/<topic>
                out.append(
                    {"acltype": "subscribePattern", "topic": f"$share/+/{g.topic}", "allow": True}
                )
        if g.access in ("write", "readwrite"):
            out.append({"acltype": "publishClientSend", "topic": g.topic, "allow": True})
    return out


def device_role(device: str) -> str:
    """The per-device role's name (Mosquitto 2.0.11's plugin has no %u: one role each)."""
    return _DEVICE_ROLE_PREFIX + device


def device_acls(fleets: Sequence[str], device: str) -> list[dict[str, Any]]:
    """The ACLs of `device_role(device)`: the same grants as the acl_file's %u patterns."""
    return _acls([g for f in fleets for g in device_grants(f, device)], shared=False)


def passwd_hashes(passwd_file: Path) -> dict[str, dict[str, Any]]:
    """mosquitto_passwd `$7$` entries -> dynsec password fields (same PBKDF2-SHA512 hash)."""
    if not passwd_file.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for line in passwd_file.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        user, _, hashed = line.partition(":")
        parts = hashed.split("$")
        if len(parts) != 5 or parts[1] != "7":
            raise ConfigError(
                f"{passwd_file}: entry for {user!r} is not a $7$ (PBKDF2-SHA512) hash; "
                "re-create it with `mosquitto_passwd` 2.0"
            )
        out[user] = {"password": parts[4], "salt": parts[3], "iterations": int(parts[2])}
    return out


def render_dynsec(
    fleets: Sequence[str],
    servers: Sequence[str],
    devices: Sequence[str],
    passwords: Mapping[str, Mapping[str, Any]] | None = None,
    admins: Sequence[str] = (),
) -> str:
    """The plugin's JSON: one role for the aggregators, one for admins, one per device, every
    client listed."""
    check_disjoint(servers, devices)
    for name in admins:
        if name in servers or name in devices:
            raise ConfigError(
                f"{name!r} is both an admin and a device or aggregator: admin names must be "
                "their own (an admin may change every identity's rights)"
            )
    passwords = passwords or {}
    unknown = sorted(set(passwords) - set(servers) - set(devices) - set(admins))
    if unknown:
        raise ConfigError(
            f"password entry for {unknown[0]!r}, which is neither an enrolled device, an "
            "aggregator nor an admin: enrol it or remove the entry"
        )
    for name in (*servers, *devices, *admins):
        topics.validate_device_id(name)
    roles = [
        {
            "rolename": SERVER_ROLE,
            "textName": "fleetlearn aggregators",
            "acls": _acls([g for f in fleets for g in server_grants(f)], shared=True),
        }
    ]
    if admins:
        roles.append({"rolename": ADMIN_ROLE, "textName": "fleetlearn admins", "acls": _ADMIN_ACLS})
    clients = []
    for name in admins:
        clients.append(
            {"username": name, "roles": [{"rolename": ADMIN_ROLE}], **passwords.get(name, {})}
        )
    for name in servers:
        clients.append(
            {"username": name, "roles": [{"rolename": SERVER_ROLE}], **passwords.get(name, {})}
        )
    for name in devices:
        role = device_role(name)
        roles.append({"rolename": role, "acls": device_acls(fleets, name)})
        clients.append({"username": name, "roles": [{"rolename": role}], **passwords.get(name, {})})
    doc = {"defaultACLAccess": _DEFAULTS, "clients": clients, "groups": [], "roles": roles}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"
