"""A demo FleetSetup for tests of the server's side alone (no devices, no files)."""

from __future__ import annotations

from pathlib import Path

from fleet.demo.parts import FleetSetup


def server_only_setup(tmp_path: Path, strategy: str) -> FleetSetup:
    return FleetSetup(
        run_dir=tmp_path,
        artifacts_dir=tmp_path / "a",
        test_file=tmp_path / "t.npz",
        device_folders=(),
        lives=(),
        fleet="demo",
        strategy=strategy,
        codec="int8",
        seed=0,
        start=0.0,
    )
