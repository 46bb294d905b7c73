"""Load this device's secure-aggregation identity from the files enrolment wrote.

    [secure_aggregation]                (agent.toml; paths relative to the file)
    identity_key = "identity.key"       Ed25519 private key (PEM, 0600): signs this device's keys
    identity_cert = "identity.cert"     the enrolment key's certificate for that key
    enrolment_key = "enrolment.pub"     the fleet's enrolment public key: checks every member

`fleetlearn broker enrol-device` writes all three next to agent.toml. Everything is checked
here, at start-up, so a wrong file fails the agent once with its name rather than every cohort.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.secagg import SecAggAgentSettings
from protocol.errors import ConfigError, FleetlearnError
from protocol.secagg.identity import DeviceIdentity, Trust, decode_cert, raw_public
from protocol.secagg.messages import Member
from protocol.signing import load_private_key, load_public_key

__all__ = ["load_identity"]

_log = logging.getLogger("agent.secagg")


def _read(path: Path | None, key: str) -> bytes:
    if path is None:
        raise ConfigError(f"secure_aggregation.{key}: required when enabled")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"secure_aggregation.{key}: cannot read {path}: {exc.strerror}") from exc


def load_identity(settings: SecAggAgentSettings, fleet: str, device_id: str) -> DeviceIdentity:
    """The identity named by `settings`, checked against `fleet`, `device_id` and the enrolment
    key; ConfigError names the key whose file is wrong."""
    try:
        key: Ed25519PrivateKey = load_private_key(_read(settings.identity_key, "identity_key"))
        cert = decode_cert(_read(settings.identity_cert, "identity_cert"))
        trust = Trust(fleet, load_public_key(_read(settings.enrolment_key, "enrolment_key")))
    except ConfigError:
        raise
    except FleetlearnError as exc:
        raise ConfigError(f"secure_aggregation: {exc}") from exc
    if (cert.fleet, cert.device_id) != (fleet, device_id):
        raise ConfigError(
            f"secure_aggregation.identity_cert: issued to {cert.device_id!r} in fleet "
            f"{cert.fleet!r}, this agent is {device_id!r} in {fleet!r}"
        )
    if raw_public(key.public_key()) != cert.identity_pk:
        raise ConfigError("secure_aggregation.identity_key: not the key its certificate names")
    identity = DeviceIdentity(cert, key, trust)
    probe = b"\x09" * 32  # a self-check: this device's own advertisement must verify
    member = Member(device_id, probe, probe, cert.identity_pk, cert.signature,
                    identity.sign_advert("probe", probe, probe))  # fmt: skip
    try:
        trust.check_member(member, "probe")
    except FleetlearnError as exc:
        raise ConfigError(
            "secure_aggregation.identity_cert: not signed by the enrolment key in "
            f"{settings.enrolment_key} ({exc})"
        ) from exc
    path = settings.identity_key
    if path is not None and path.stat().st_mode & 0o077:
        _log.warning("%s is readable by other users: chmod 600 it", path)
    return identity
