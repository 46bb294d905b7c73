"""The `fleetlearn` command: one entry point, one subcommand per thing that runs."""

__all__ = ["main"]

from fleetlearn.cli import main
