from __future__ import annotations

import os
import shutil
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetlearn.provision import init_ca, issue_client_cert, issue_server_cert, revoke
from fleetlearn.provision_enrol import enrol_device, remove_passwords, set_passwords
from protocol.errors import ConfigError


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_signs_device_cert_with_device_id_as_cn(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "home")
    cert_path, key_path = issue_client_cert(ca, "hub-1", tmp_path / "d")
    cert, ca_cert = _cert(cert_path), _cert(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hub-1"
    cert.verify_directly_issued_by(ca_cert)  # raises if not signed by the fleet CA
    assert isinstance(ca_cert.public_key(), ec.EllipticCurvePublicKey)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.key).st_mode) == 0o600


def test_server_cert_names_ip_and_dns(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "home")
    cert_path, _ = issue_server_cert(ca, tmp_path / "b", ["broker.example.org", "10.0.0.5"])
    san = _cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


def test_existing_ca_is_not_replaced(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", "home")
    with pytest.raises(ConfigError, match="refusing"):
        init_ca(tmp_path / "ca", "home")


def test_revoke_puts_every_serial_of_the_device_in_the_crl(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "home")
    first, _ = issue_client_cert(ca, "hub-1", tmp_path / "1")
    second, _ = issue_client_cert(ca, "hub-1", tmp_path / "2")  # re-issued
    other, _ = issue_client_cert(ca, "hub-2", tmp_path / "3")
    revoked = revoke(ca, "hub-1")
    crl = x509.load_pem_x509_crl(ca.crl.read_bytes())
    in_crl = {r.serial_number for r in crl}
    assert set(revoked) == in_crl == {_cert(first).serial_number, _cert(second).serial_number}
    assert _cert(other).serial_number not in in_crl


# Skips without Mosquitto's tools, except in CI (CI=true), where .ci/run installs them: fail there.
needs_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None
    and not Path("/usr/bin/mosquitto_passwd").exists()
    and os.environ.get("CI", "").lower() != "true",
    reason="mosquitto_passwd not installed",
)


@needs_passwd
def test_password_entries_are_hashed_merged_and_removed(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    set_passwords(passwd, {"a": "secret-a", "b": "secret-b"})
    set_passwords(passwd, {"a": "new-a"})  # replaces, keeps b
    text = passwd.read_text()
    assert sorted(line.split(":")[0] for line in text.splitlines()) == ["a", "b"]
    assert "secret" not in text and "new-a" not in text  # hashed ($7$ = PBKDF2-SHA512)
    assert all(line.split(":", 1)[1].startswith("$7$") for line in text.splitlines())
    assert not list(tmp_path.glob(".*plain"))  # plaintext temp file is gone
    assert remove_passwords(passwd, ["a", "zzz"]) == ["a"]
    assert [line.split(":")[0] for line in passwd.read_text().splitlines()] == ["b"]


@needs_passwd
def test_enrol_device_writes_a_bundle_the_agent_can_load(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", "home")
    bundle = enrol_device(
        tmp_path, "hub-1", fleet="home", broker_url="mqtts://b.example:8883", password=True
    )
    doc = tomllib.loads(bundle.agent_toml.read_text())
    assert (doc["device_id"], doc["fleet"]) == ("hub-1", "home")
    assert doc["broker"]["url"] == "mqtts://b.example:8883"
    assert doc["broker"]["username"] == "hub-1" and doc["broker"]["password"] == bundle.password
    for name in ("ca_file", "cert_file", "key_file"):
        assert (bundle.dir / doc["broker"][name]).exists()
    assert stat.S_IMODE(os.stat(bundle.agent_toml).st_mode) == 0o600
    with pytest.raises(ConfigError, match="reserved"):
        enrol_device(tmp_path, "fleet-server", fleet="home", broker_url="mqtts://b:8883")


def test_enrol_device_writes_an_identity_the_agent_loads_and_peers_trust(tmp_path: Path) -> None:
    from agent.config import parse_config
    from agent.secagg_identity import load_identity
    from protocol.secagg.identity import Enrolment
    from protocol.signing import public_key_to_pem

    init_ca(tmp_path / "ca", "home")
    bundle = enrol_device(tmp_path, "hub-1", fleet="home", broker_url="mqtts://b:8883")
    other = enrol_device(tmp_path, "hub-2", fleet="home", broker_url="mqtts://b:8883")
    assert bundle.identity_key is not None
    assert stat.S_IMODE(os.stat(bundle.identity_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca" / "enrolment.key").st_mode) == 0o600
    doc = tomllib.loads(bundle.agent_toml.read_text())
    doc["secure_aggregation"]["enabled"] = True
    doc["model_id"] = "m"
    config = parse_config(doc, bundle.dir)  # the defaults name the files beside agent.toml
    identity = load_identity(config.secure_aggregation, "home", "hub-1")
    assert identity.cert.device_id == "hub-1"
    # both devices were certified by the same enrolment key: hub-1 trusts hub-2's identity
    assert (other.dir / "enrolment.pub").read_bytes() == (bundle.dir / "enrolment.pub").read_bytes()
    with pytest.raises(ConfigError, match="issued to 'hub-1'"):
        load_identity(config.secure_aggregation, "home", "hub-2")
    with pytest.raises(ConfigError, match="identity_cert"):
        load_identity(config.secure_aggregation, "elsewhere", "hub-1")
    stranger = Enrolment.generate("home")  # an enrolment.pub the fleet never used
    (bundle.dir / "enrolment.pub").write_bytes(public_key_to_pem(stranger.key.public_key()))
    with pytest.raises(ConfigError, match="not signed by the enrolment key"):
        load_identity(config.secure_aggregation, "home", "hub-1")
