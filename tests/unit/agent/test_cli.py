"""`fleetlearn agent` wiring: registered, and a bad config is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlearn.cli import SUBCOMMANDS, main


def test_registered() -> None:
    assert SUBCOMMANDS["agent"][0] == "agent.cli"


def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('device_id = "d"\nfleet = "f"\nmodel_id = "m"\n[policy]\nmin_battery = 3\n')
    assert main(["agent", "--config", str(cfg)]) == 2
    assert "data_dir: required key is missing" in capsys.readouterr().err


def test_missing_artifacts_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        'device_id = "d"\nfleet = "f"\nmodel_id = "m"\ndata_dir = "data"\n'
        'artifacts_dir = "nowhere"\nstate_dir = "s"\nfleet_public_key = "k.pub"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n'
    )
    assert main(["agent", "--config", str(cfg)]) == 2
    assert "nowhere" in capsys.readouterr().err
