"""Operator tooling for the broker, part 1: the fleet CA, certificates and the CRL.

Layout of a provisioning folder (default `broker-secrets/`, git-ignored; holds the CA key):

    ca/ca.key (0600)  ca/ca.crt  ca/crl.pem  ca/issued.json (name -> serial)
    broker/server.key (0600)  broker/server.crt  broker/passwd  broker/acl
    devices/<device_id>/ca.crt  device.crt  device.key (0600)  agent.toml (0600)
    servers/<name>/, admins/<name>/   client.crt  client.key (0600)  password (0600)  ca.crt

Keys are ECDSA P-256 (fast handshakes on small devices). Passwords, ACL and enrolment live in
fleetlearn/provision_acl.py and fleetlearn/provision_enrol.py.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import ConfigError

__all__ = [
    "CaFiles",
    "init_ca",
    "issue_client_cert",
    "issue_server_cert",
    "revoke",
    "write_private",
]

_CA_DAYS = 3650
_LEAF_DAYS = 730
_CRL_DAYS = 365  # OpenSSL refuses EVERY client once the CRL's nextUpdate passes: re-run `revoke`


@dataclass(frozen=True)
class CaFiles:
    dir: Path

    @property
    def key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def issued(self) -> Path:
        return self.dir / "issued.json"


# ---------------------------------------------------------------------------- files
def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write atomically with `mode` from the start (no window where a key is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(ca: CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
        key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"fleet CA in {ca.dir}: {exc} (run `fleetlearn broker init-ca`)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca.key}: expected an EC private key")
    return cert, key


# ---------------------------------------------------------------------------- certificates
def init_ca(ca_dir: Path, fleet: str, *, force: bool = False) -> CaFiles:
    """Create the fleet CA (key, self-signed certificate, empty CRL)."""
    ca = CaFiles(ca_dir)
    if ca.key.exists() and not force:
        raise ConfigError(f"{ca.key} exists: refusing to replace a fleet CA (use --force)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fleetlearn {fleet} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(ca.key, _key_pem(key))
    write_private(ca.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write_private(ca.issued, b"{}\n", 0o644)
    _write_crl(ca, cert, key, [])
    return ca


def _usage(*, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca: CaFiles, common_name: str, sans: Sequence[x509.GeneralName], server: bool
) -> tuple[bytes, bytes, int]:
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial


def issue_server_cert(ca: CaFiles, out_dir: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """The broker's certificate, valid for each of `hosts` (DNS names or IP addresses)."""
    if not hosts:
        raise ConfigError("server-cert: give at least one --host the devices connect to")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert_pem, key_pem, _ = _issue(ca, hosts[0], sans, server=True)
    cert_path, key_path = out_dir / "server.crt", out_dir / "server.key"
    write_private(cert_path, cert_pem, 0o644)
    write_private(key_path, key_pem)
    return cert_path, key_path


def issue_client_cert(
    ca: CaFiles, name: str, out_dir: Path, stem: str = "device"
) -> tuple[Path, Path]:
    """A client certificate whose CN is the MQTT username (`use_identity_as_username`)."""
    cert_pem, key_pem, serial = _issue(ca, name, [], server=False)
    cert_path, key_path = out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
    write_private(cert_path, cert_pem, 0o644)
    write_private(key_path, key_pem)
    issued = _read_issued(ca)
    issued.setdefault(name, []).append(format(serial, "x"))
    write_private(ca.issued, (json.dumps(issued, indent=1, sort_keys=True) + "\n").encode(), 0o644)
    return cert_path, key_path


def _read_issued(ca: CaFiles) -> dict[str, list[str]]:
    try:
        data = json.loads(ca.issued.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ca.issued}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{ca.issued}: expected a JSON object")
    return {str(k): [str(s) for s in v] for k, v in data.items()}


def _write_crl(
    ca: CaFiles, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, serials: list[int]
) -> None:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=_CRL_DAYS))
    )
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    write_private(ca.crl, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def revoke(ca: CaFiles, name: str) -> list[int]:
    """Add every certificate issued to `name` to the CRL; returns the revoked serials."""
    ca_cert, ca_key = _load_ca(ca)
    serials = [int(s, 16) for s in _read_issued(ca).get(name, [])]
    try:
        crl = x509.load_pem_x509_crl(ca.crl.read_bytes())
        old = [r.serial_number for r in crl]
    except (OSError, ValueError):
        old = []
    _write_crl(ca, ca_cert, ca_key, old + serials)
    return serials
