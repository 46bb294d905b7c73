"""--dp-* options: the same [privacy] table an operator writes, refused where unsound, and the
demo report and simulator carry the epsilon spent."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from fleet.demo import cli as demo_cli
from fleet.demo.server_part import ServerTuning, server_config_doc
from fleet.privacy_args import add_privacy_arguments, privacy_table
from fleet.sim.server_side import SimServer
from protocol.errors import ConfigError
from server.admission import Admission, AdmissionLimits
from server.config import parse_config
from server.privacy import parse_privacy
from server.strategies import make_strategy
from tests.unit.demo.factory import server_only_setup
from tests.unit.demo.test_report import make_report
from tests.unit.server.factory import make_manifest, update_bytes


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_privacy_arguments(p)
    return p.parse_args(list(argv))


def test_table_defaults_delta_to_one_over_devices_and_calibrates() -> None:
    table = privacy_table(_parse("--dp-epsilon", "4"), devices=5000)
    assert table == {
        "epsilon": 4.0,
        "delta": 1 / 5000,
        "clip_norm": 1.0,
        "adaptive_clip": False,
        "accountant": "rdp",
        "planned_flushes": 50,
    }
    config = parse_privacy(table)
    assert config.noise_multiplier > 1.0  # calibrated for 50 flushes at epsilon 4
    noise = privacy_table(_parse("--dp-epsilon", "4", "--dp-noise", "1.5"), devices=10)
    assert noise is not None and noise["noise_multiplier"] == 1.5
    assert "planned_flushes" not in noise


def test_dp_options_without_a_budget_are_refused() -> None:
    assert privacy_table(_parse(), devices=10) is None
    with pytest.raises(ConfigError, match="--dp-epsilon"):
        privacy_table(_parse("--dp-noise", "1.0"), devices=10)


def test_demo_refuses_fedasync_with_dp() -> None:
    p = argparse.ArgumentParser()
    demo_cli.add_arguments(p)
    args = p.parse_args(["--dp-epsilon", "8", "--strategy", "fedasync"])
    with pytest.raises(ConfigError, match="FedAsync"):
        demo_cli.run(args)


def test_demo_server_config_passes_the_privacy_table_to_the_server_parser(tmp_path: Path) -> None:
    setup = server_only_setup(tmp_path, "fedbuff")
    table = {"epsilon": 8.0, "delta": 0.05, "noise_multiplier": 1.0}
    doc = server_config_doc(setup, "mqtt://127.0.0.1:1", ServerTuning(), True, {}, table)
    config = parse_config(doc, tmp_path)
    assert config.privacy is not None and config.privacy.epsilon == 8.0


def test_demo_report_shows_epsilon_spent() -> None:
    privacy = {
        "epsilon": 1.5,
        "delta": 1e-3,
        "epsilon_budget": 8.0,
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "flushes": 3.0,
    }
    doc = make_report(privacy=privacy).to_json()
    assert doc["epsilon_spent"] == 1.5 and doc["privacy"]["flushes"] == 3.0
    assert "epsilon_spent" not in make_report().to_json()


def test_simulated_server_stops_when_the_budget_is_spent() -> None:
    manifest = make_manifest(6)
    config = parse_privacy(
        {"epsilon": 2.0, "delta": 1e-3, "planned_flushes": 2, "seed": 0}, allow_seed=True
    )
    strategy = make_strategy("fedbuff", {"buffer_size": 1}, None, privacy=config)
    server = SimServer(strategy, Admission(manifest, AdmissionLimits()), np.zeros(6, np.float32))
    assert server.clip_norm() == 1.0 and not server.budget_spent()
    for i in range(3):
        payload = update_bytes(manifest, np.ones(6, np.float32), device=f"d-{i}", base=i)
        server.receive(f"d-{i}", payload, now=float(i))
    assert server.version == 2 and server.budget_spent()
    assert server.rejected == {"privacy_budget": 1}  # the third update found the budget spent
