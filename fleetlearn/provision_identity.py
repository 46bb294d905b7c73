"""Operator tooling, part 4: the enrolment key and each device's secure-aggregation identity.

    ca/enrolment.key (0600)  ca/enrolment.pub        one per provisioning folder, kept offline
    devices/<id>/identity.key (0600)  identity.cert  enrolment.pub

The enrolment key certifies "device <id> of fleet <f> signs with this Ed25519 key"; devices check
every cohort member against enrolment.pub (protocol/secagg/identity.py). It is a key of its own,
not the fleet key that signs model offers, because that one lives on the aggregation server and
a server able to certify identities could enrol its own. Give the aggregator enrolment.pub too
(`[secure_aggregation] enrolment_key`) so it refuses unenrolled joins before relaying them.
"""

from __future__ import annotations

from pathlib import Path

from fleetlearn.provision import write_private
from protocol.errors import ConfigError, FleetlearnError
from protocol.secagg.identity import Enrolment, encode_cert, raw_public
from protocol.signing import (
    generate_keypair,
    load_private_key,
    private_key_to_pem,
    public_key_to_pem,
)

__all__ = ["ENROLMENT_PUBLIC", "enrolment", "write_device_identity"]

ENROLMENT_PUBLIC = "enrolment.pub"


def enrolment(ca_dir: Path, fleet: str) -> Enrolment:
    """The provisioning folder's enrolment key for `fleet`, created (0600) on first use."""
    path = ca_dir / "enrolment.key"
    if not path.exists():
        key, public = generate_keypair()
        write_private(path, private_key_to_pem(key))
        write_private(ca_dir / ENROLMENT_PUBLIC, public_key_to_pem(public), 0o644)
    try:
        return Enrolment(fleet, load_private_key(path.read_bytes()))
    except (OSError, FleetlearnError) as exc:
        raise ConfigError(f"enrolment key {path}: {exc}") from exc


def write_device_identity(enrol: Enrolment, device_id: str, out: Path) -> tuple[Path, Path, Path]:
    """A fresh identity key for `device_id`, its certificate and the enrolment public key."""
    key, public = generate_keypair()
    cert = enrol.certify(device_id, raw_public(public))
    paths = (out / "identity.key", out / "identity.cert", out / ENROLMENT_PUBLIC)
    write_private(paths[0], private_key_to_pem(key))
    write_private(paths[1], encode_cert(cert), 0o644)
    write_private(paths[2], public_key_to_pem(enrol.key.public_key()), 0o644)
    return paths
