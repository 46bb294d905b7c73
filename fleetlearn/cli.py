"""Dispatch `fleetlearn <subcommand>` to the module that owns it.

Subcommand modules are imported lazily, only when chosen: `fleetlearn agent` on a device must not
import the server, the model builders or torch. Each module exposes
`add_arguments(parser: argparse.ArgumentParser) -> None` and `run(args: argparse.Namespace) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from protocol.errors import FleetlearnError

# name -> (module, one-line help). Adding a subcommand is one line here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "keys": ("fleetlearn.keys_cli", "create an Ed25519 fleet key pair for signing model offers"),
    "agent": ("agent.cli", "run the device agent: train when idle and charging, send deltas"),
    "export": ("models.export_cli", "write a zoo model's training-step graph and artifacts"),
    "broker": ("fleetlearn.provision_cli", "fleet CA, certificates, ACL; enrol/revoke devices"),
    "server": ("server.cli", "run the aggregation server (asynchronous, durable, signed offers)"),
    "console": (
        "console.cli",
        "run the aggregation server with its web console (fleet, models, updates, privacy)",
    ),
    "demo": (
        "fleet.demo.cli",
        "run a live fleet of real agents, server and broker, in one command",
    ),
    "simulate": ("fleet.sim.cli", "compare server strategies and codecs on a simulated fleet"),
    "audit": (
        "fleet.audit.cli",
        "audit a configuration: `audit privacy` bounds its epsilon from below, empirically",
    ),
    "smarthome": (
        "fleet.smarthome_cli",
        "generate the smart-home command data set (one household per device folder)",
    ),
}


class _SubcommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module_name: str) -> _SubcommandModule:
    return cast(_SubcommandModule, importlib.import_module(module_name))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetlearn", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only what runs
            _load(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # onnxruntime calls basicConfig() on import; ours wins
    )
    module = _load(SUBCOMMANDS[args.command][0])
    try:
        return module.run(args)
    except FleetlearnError as exc:
        print(f"fleetlearn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
