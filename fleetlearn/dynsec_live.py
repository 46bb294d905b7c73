"""Live changes to a running Mosquitto: commands on the dynamic-security plugin's control topic.

The plugin reads dynamic-security.json only at start-up (SIGHUP does not reload it), so a file
change alone leaves a revoked device connected, with its rights, until the next restart. The
plugin also takes JSON commands on `$CONTROL/dynamic-security/v1` from a client whose role
grants that topic (the admin identity, `fleetlearn broker enrol-admin`) and answers each one on
`$CONTROL/dynamic-security/v1/response` (QoS 0, to every subscriber: `correlationData` picks
ours out). Deleting or disabling a client also disconnects every connection under its username.

What each change sends (exact names from the plugin's command reference):

    revoke: deleteClient <device>, deleteRole device-<device>
    enrol:  createRole device-<device> (its ACLs), createClient <device> (password, role)

A certificate identity (listener with `use_identity_as_username`) is never password-checked,
so deleting its client cannot stop it reconnecting; with its client and role gone it has no
rights at all (deny by default): it can neither publish, subscribe nor receive. The listener
refuses the certificate itself once it re-reads the CRL (SIGHUP or restart).
"""

from __future__ import annotations

import json
import queue
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fleetlearn.provision_dynsec import CONTROL_TOPIC, RESPONSE_TOPIC, device_acls, device_role
from protocol.errors import ConfigError, FleetlearnError
from transport import BrokerConfig, MqttLink, PublishRefused

__all__ = [
    "LiveChangeFailed",
    "Reply",
    "admin_config",
    "enrol_live",
    "revoke_live",
    "send_commands",
]

AdminLogin = Literal["cert", "password"]

# Answers that mean "already the way we want it": a repeated revoke or enrol succeeds.
_ALREADY_GONE = {"Client not found", "Role not found"}
_ALREADY_THERE = {"Client already exists", "Role already exists"}


class LiveChangeFailed(FleetlearnError):
    """The running broker did not take a change (login refused, no answer, or an error reply)."""


@dataclass(frozen=True, slots=True)
class Reply:
    command: str
    error: str | None  # None: done


def admin_config(
    root: Path, url: str, name: str, login: AdminLogin = "cert", timeout: float = 5.0
) -> BrokerConfig:
    """How the admin identity in root/admins/<name>/ logs in to `url` (no persistent session)."""
    folder = root / "admins" / name
    if not folder.is_dir():
        raise ConfigError(
            f"no admin identity {name!r} in {root / 'admins'}: run `fleetlearn broker "
            "enrol-admin`, then `fleetlearn broker acl` and restart Mosquitto once"
        )
    common: dict[str, Any] = {
        "url": url,
        "client_id": name,
        "ca_file": folder / "ca.crt",
        "clean_start": True,
        "connack_timeout": timeout,
        "backoff_initial": timeout,  # one try: a refusal is reported, not retried
        "backoff_max": timeout,
    }
    if login == "cert":
        return BrokerConfig(
            cert_file=folder / "client.crt", key_file=folder / "client.key", **common
        )
    secret = (folder / "password").read_text().strip()
    return BrokerConfig(username=name, password=secret, **common)


def send_commands(
    config: BrokerConfig, commands: Sequence[Mapping[str, Any]], timeout: float = 10.0
) -> list[Reply]:
    """Send `commands` in one control message and wait for the plugin's reply to each."""
    tag = secrets.token_hex(8)
    tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(commands)]
    who = f"{config.username or config.client_id!r} at {config.url}"
    mqtt_link = MqttLink(config)
    mqtt_link.subscribe(RESPONSE_TOPIC, qos=0)  # sent before our command (in the CONNACK hook)
    mqtt_link.start()
    try:
        if not mqtt_link.wait_connected(timeout):
            raise LiveChangeFailed(f"the broker refused admin {who}: {mqtt_link.last_error}")
        handle = mqtt_link.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode())
        try:
            handle.wait(timeout)
        except PublishRefused as exc:
            raise LiveChangeFailed(
                f"the broker refused admin {who} the control topic ({exc.reason}): does the "
                "running broker's dynamic-security.json give it the admin role? (enrol-admin, "
                "acl, restart once)"
            ) from exc
        return _replies(mqtt_link.incoming(), tag, len(tagged), who, timeout)
    finally:
        mqtt_link.stop()


def _replies(
    incoming: queue.Queue[Any], tag: str, count: int, who: str, timeout: float
) -> list[Reply]:
    found: dict[str, Reply] = {}
    deadline = time.monotonic() + timeout
    while len(found) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LiveChangeFailed(
                f"no answer from the dynamic-security plugin for admin {who} within "
                f"{timeout:g} s: is the plugin loaded, and does the admin hold its role?"
            )
        try:
            message = incoming.get(timeout=left)
        except queue.Empty:
            continue
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            continue  # not a reply we can read: someone else's traffic
        for item in responses if isinstance(responses, list) else []:
            corr = item.get("correlationData") if isinstance(item, dict) else None
            if isinstance(corr, str) and corr.startswith(f"{tag}-"):
                found[corr] = Reply(str(item.get("command")), item.get("error"))
    return [found[f"{tag}-{i}"] for i in range(count)]


def _check(replies: Sequence[Reply], fine: set[str], what: str) -> list[Reply]:
    """Raise on any error not in `fine`; returns the replies that were 'already so'."""
    bad = [r for r in replies if r.error is not None and r.error not in fine]
    if bad:
        detail = "; ".join(f"{r.command}: {r.error}" for r in bad)
        raise LiveChangeFailed(f"the broker refused to {what}: {detail}")
    return [r for r in replies if r.error is not None]


def revoke_live(config: BrokerConfig, device: str) -> list[Reply]:
    """Delete the device's client (which disconnects it) and its role on the running broker.
    Returns the replies that said it was already gone."""
    commands = [
        {"command": "deleteClient", "username": device},
        {"command": "deleteRole", "rolename": device_role(device)},
    ]
    return _check(send_commands(config, commands), _ALREADY_GONE, f"revoke {device!r}")


def enrol_live(
    config: BrokerConfig, fleets: Sequence[str], device: str, password: str | None
) -> list[Reply]:
    """Create the device's role (its ACLs) and client on the running broker; if they exist
    (a re-enrolment), set the role's ACLs and the client's password and role instead."""
    acls = device_acls(fleets, device)
    role = device_role(device)
    client: dict[str, Any] = {"username": device, "roles": [{"rolename": role}]}
    if password is not None:
        client["password"] = password  # over TLS; the plugin stores only its hash
    first = [
        {"command": "createRole", "rolename": role, "acls": acls},
        {"command": "createClient", **client},
    ]
    existed = _check(send_commands(config, first), _ALREADY_THERE, f"enrol {device!r}")
    if not existed:
        return []
    again = [
        {"command": "modifyRole", "rolename": role, "acls": acls},
        {"command": "modifyClient", **client},
        {"command": "enableClient", "username": device},
    ]
    _check(send_commands(config, again), set(), f"update {device!r}")
    return existed
