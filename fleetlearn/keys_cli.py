"""`fleetlearn keys --out DIR`: create the fleet's Ed25519 key pair.

The private key signs model offers on the server; the public key goes into every agent's config.
It writes files, so it lives with the operator CLI, not in the pure protocol package.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from protocol.errors import ConfigError
from protocol.signing import generate_keypair, private_key_to_pem, public_key_to_pem

PRIVATE_NAME = "fleet.key"
PUBLIC_NAME = "fleet.pub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for fleet.key, fleet.pub")
    parser.add_argument("--force", action="store_true", help="overwrite an existing key pair")


def write_keypair(out: Path, force: bool = False) -> tuple[Path, Path]:
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    if private_path.exists() and not force:
        raise ConfigError(f"{private_path} exists; pass --force to replace the fleet key")
    out.mkdir(parents=True, exist_ok=True)
    key, public = generate_keypair()
    # Create the private key file 0600 from the start: never world-readable, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_to_pem(key))
    public_path.write_bytes(public_key_to_pem(public))
    return private_path, public_path


def run(args: argparse.Namespace) -> int:
    private_path, public_path = write_keypair(args.out, args.force)
    print(f"private key (server only, keep secret): {private_path}")
    print(f"public key (every agent's config):      {public_path}")
    return 0
