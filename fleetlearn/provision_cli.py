"""`fleetlearn broker ...`: what an operator runs to set up the broker and enrol devices.

    fleetlearn broker init-ca --fleet home                 # once: the fleet CA
    fleetlearn broker server-cert --host broker.example.org --host 10.0.0.5
    fleetlearn broker acl --fleet home                      # broker/dynamic-security.json (+ acl)
    fleetlearn broker enrol-server                          # the aggregator's cert + password
    fleetlearn broker enrol-device kitchen-hub-01 --fleet home --url mqtts://broker.example.org:8883
    fleetlearn broker revoke-device kitchen-hub-01          # CRL + password entry removed
    fleetlearn broker enrol-admin                           # identity for live changes
    fleetlearn broker revoke-device kitchen-hub-01 --live --broker mqtts://broker:8883

All output goes under --dir (default ./broker-secrets, git-ignored): it holds the CA key.
With --live, enrol-device and revoke-device also change the running broker (the
dynamic-security plugin's control topic, fleetlearn/dynsec_live.py): no restart needed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fleetlearn.dynsec_live import LiveChangeFailed, admin_config, enrol_live, revoke_live
from fleetlearn.provision import CaFiles, init_ca, issue_server_cert, revoke
from fleetlearn.provision_acl import DEFAULT_SERVER_USER
from fleetlearn.provision_enrol import (
    DEFAULT_ADMIN_USER,
    enrol_admin,
    enrol_device,
    enrol_server,
    remove_passwords,
    write_broker_security,
)
from protocol.errors import ConfigError
from transport import BrokerConfig

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
    _live_arguments(p)
    p = sub.add_parser("revoke-device", help="revoke its certificates and delete its password")
    p.add_argument("device_id")
    _live_arguments(p)
    p = sub.add_parser(
        "enrol-admin", help="certificate and password of the identity that sends live changes"
    )
    p.add_argument("name", nargs="?", default=DEFAULT_ADMIN_USER)


def _live_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--live",
        action="store_true",
        help="also apply it to the running broker now (dynamic-security control topic)",
    )
    p.add_argument("--broker", help="with --live: the broker's url, e.g. mqtts://host:8883")
    p.add_argument("--admin", default=DEFAULT_ADMIN_USER, help="with --live: admin identity")
    p.add_argument(
        "--admin-login",
        choices=["cert", "password"],
        default="cert",
        help="with --live: log in by client certificate (8883) or password (8884)",
    )


def _live_config(args: argparse.Namespace) -> BrokerConfig | None:
    """The admin's login for --live (checked before any file changes), or None."""
    if not args.live:
        return None
    if not args.broker:
        raise ConfigError(f"{args.action} --live needs --broker mqtts://HOST:PORT")
    return admin_config(args.dir, args.broker, args.admin, args.admin_login)


def _remembered_fleets(root: Path) -> list[str]:
    path = root / "broker" / "fleets"
    if not path.exists():
        raise ConfigError("enrol-device --live: run `fleetlearn broker acl --fleet NAME` first")
    return path.read_text().split()


def _pushed(what: str, root: Path) -> str:
    return (
        f"{what}; the running broker did not take it. The files under {root / 'broker'} "
        "(dynamic-security.json, crl.pem) were updated anyway: install them and restart "
        "Mosquitto, or run the command again with --live"
    )


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
    elif args.action == "enrol-admin":
        cert, _ = enrol_admin(root, args.name)
        out = root / "admins" / args.name
        print(f"admin {args.name!r}: {cert} (port 8883) or the password in {out / 'password'}")
        _rewrite_security(root)
    elif args.action == "enrol-device":
        live = _live_config(args)
        bundle = enrol_device(
            root,
            args.device_id,
            fleet=args.fleet,
            broker_url=args.url,
            cert=not args.no_cert,
            password=args.password or args.no_cert,
        )
        print(f"device {bundle.device_id!r}: copy {bundle.dir}/ to the device (agent.toml inside)")
        _rewrite_security(root, live=live is not None)
        if live is not None:
            try:
                existed = enrol_live(
                    live, _remembered_fleets(root), args.device_id, bundle.password
                )
            except LiveChangeFailed as exc:
                raise LiveChangeFailed(_pushed(str(exc), root)) from exc
            again = " (it existed: rights and password updated)" if existed else ""
            print(f"the running broker at {args.broker} admits {args.device_id!r} now{again}")
    elif args.action == "revoke-device":
        live = _live_config(args)
        serials = revoke(ca, args.device_id)
        shutil.copyfile(ca.crl, broker / "crl.pem")
        removed = remove_passwords(broker / "passwd", [args.device_id])
        if not serials and not removed and live is None:
            raise ConfigError(f"revoke-device: nothing was issued to {args.device_id!r}")
        bundle_dir = root / "devices" / args.device_id
        if bundle_dir.is_dir():
            shutil.rmtree(bundle_dir)  # no longer an enrolled identity: out of the ACLs
        _rewrite_security(root, live=live is not None)
        print(
            f"revoked {len(serials)} certificate(s) and {len(removed)} password entr(y/ies) of "
            f"{args.device_id!r}; the listener refuses its certificate once Mosquitto re-reads "
            f"{broker / 'crl.pem'} (SIGHUP or restart)"
        )
        if live is not None:
            try:
                gone = revoke_live(live, args.device_id)
            except LiveChangeFailed as exc:
                raise LiveChangeFailed(_pushed(str(exc), root)) from exc
            note = " (it was already absent there)" if gone else ""
            print(
                f"the running broker at {args.broker} deleted {args.device_id!r} and its rights "
                f"and disconnected it{note}"
            )
    return 0


def _rewrite_security(root: Path, *, live: bool = False) -> None:
    written = write_broker_security(root)
    if written and live:
        print(f"rewrote {', '.join(map(str, written))}: install it for the next restart")
    elif written:
        print(f"rewrote {', '.join(map(str, written))}: restart Mosquitto (or use --live)")
    else:
        print("then run `fleetlearn broker acl --fleet NAME` and restart Mosquitto")
