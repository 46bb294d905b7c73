"""`fleetlearn broker ...`: what an operator runs to set up the broker and enrol devices.

    fleetlearn broker init-ca --fleet home                 # once: the fleet CA
    fleetlearn broker server-cert --host broker.example.org --host 10.0.0.5
    fleetlearn broker acl --fleet home                      # broker/dynamic-security.json (+ acl)
    fleetlearn broker enrol-server                          # the aggregator's cert + password
    fleetlearn broker enrol-device kitchen-hub-01 --fleet home --url mqtts://broker.example.org:8883
    fleetlearn broker revoke-device kitchen-hub-01          # CRL + password entry removed

All output goes under --dir (default ./broker-secrets, git-ignored): it holds the CA key.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fleetlearn.provision import CaFiles, init_ca, issue_server_cert, revoke
from fleetlearn.provision_acl import DEFAULT_SERVER_USER
from fleetlearn.provision_enrol import (
    enrol_device,
    enrol_server,
    remove_passwords,
    write_broker_security,
)
from protocol.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=Path("broker-secrets"), help="provisioning root"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("init-ca", help="create the fleet CA (key, certificate, empty CRL)")
    p.add_argument("--fleet", required=True)
    p.add_argument("--force", action="store_true", help="replace an existing CA (re-enrol all!)")
    p = sub.add_parser("server-cert", help="the broker's TLS certificate")
    p.add_argument("--host", action="append", required=True, help="DNS name or IP (repeatable)")
    p = sub.add_parser(
        "acl",
        help="write broker/dynamic-security.json (and broker/acl) for every enrolled identity",
    )
    p.add_argument("--fleet", action="append", required=True, help="repeatable")
    p.add_argument(
        "--server-user",
        action="append",
        help=f"an aggregator name besides {DEFAULT_SERVER_USER} and those from enrol-server",
    )
    p = sub.add_parser("enrol-server", help="client certificate and password for an aggregator")
    p.add_argument("name", nargs="?", default=DEFAULT_SERVER_USER)
    p = sub.add_parser("enrol-device", help="certificate and/or password + agent.toml for a device")
    p.add_argument("device_id")
    p.add_argument("--fleet", required=True)
    p.add_argument("--url", required=True, help="broker url the device uses (mqtts://...)")
    p.add_argument("--password", action="store_true", help="also create a password entry")
    p.add_argument("--no-cert", action="store_true", help="password only (port 8884 listener)")
    p = sub.add_parser("revoke-device", help="revoke its certificates and delete its password")
    p.add_argument("device_id")


def run(args: argparse.Namespace) -> int:
    root: Path = args.dir
    ca = CaFiles(root / "ca")
    broker = root / "broker"
    if args.action == "init-ca":
        init_ca(ca.dir, args.fleet, force=args.force)
        broker.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca.cert, broker / "ca.crt")
        shutil.copyfile(ca.crl, broker / "crl.pem")
        print(f"fleet CA in {ca.dir} (keep {ca.key} offline); broker files in {broker}")
    elif args.action == "server-cert":
        cert, key = issue_server_cert(ca, broker, args.host)
        print(f"wrote {cert} and {key} for {', '.join(args.host)}")
    elif args.action == "acl":
        written = write_broker_security(root, args.fleet, args.server_user)
        print(f"wrote {', '.join(map(str, written))}; restart Mosquitto to apply")
    elif args.action == "enrol-server":
        cert, _ = enrol_server(root, args.name)
        out = root / "servers" / args.name
        print(f"aggregator {args.name!r}: {cert} (port 8883) or the password in {out / 'password'}")
        _rewrite_security(root)
    elif args.action == "enrol-device":
        bundle = enrol_device(
            root,
            args.device_id,
            fleet=args.fleet,
            broker_url=args.url,
            cert=not args.no_cert,
            password=args.password or args.no_cert,
        )
        print(f"device {bundle.device_id!r}: copy {bundle.dir}/ to the device (agent.toml inside)")
        _rewrite_security(root)
    elif args.action == "revoke-device":
        serials = revoke(ca, args.device_id)
        shutil.copyfile(ca.crl, broker / "crl.pem")
        removed = remove_passwords(broker / "passwd", [args.device_id])
        if not serials and not removed:
            raise ConfigError(f"revoke-device: nothing was issued to {args.device_id!r}")
        bundle_dir = root / "devices" / args.device_id
        if bundle_dir.is_dir():
            shutil.rmtree(bundle_dir)  # no longer an enrolled identity: out of the ACLs
        _rewrite_security(root)
        print(
            f"revoked {len(serials)} certificate(s) and {len(removed)} password entr(y/ies) of "
            f"{args.device_id!r}; restart Mosquitto to load {broker / 'crl.pem'}"
        )
    return 0


def _rewrite_security(root: Path) -> None:
    written = write_broker_security(root)
    if written:
        print(f"rewrote {', '.join(map(str, written))}: restart Mosquitto to apply")
    else:
        print("then run `fleetlearn broker acl --fleet NAME` and restart Mosquitto")
