"""`fleetlearn demo --strategy auto` writes server.recommended's strategy and serving average."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.demo.server_part import ServerTuning, server_config_doc
from server.config import parse_config
from server.recommended import recommended_strategy
from tests.unit.demo.factory import server_only_setup


def _doc(tmp_path: Path, strategy: str, tuning: ServerTuning) -> dict[str, object]:
    setup = server_only_setup(tmp_path, strategy)
    return server_config_doc(setup, "mqtt://127.0.0.1:1", tuning, True, {})


@pytest.mark.parametrize("devices", [8, 100])
def test_auto_uses_the_recommended_strategy_and_serving_decay(tmp_path: Path, devices: int) -> None:
    rec = recommended_strategy(devices)
    doc = _doc(tmp_path, "auto", ServerTuning(recommended_concurrency=devices))
    config = parse_config(doc, tmp_path)  # the server's own parser accepts it
    assert doc["serving"] == {"decay": rec.serving_decay}
    strategy = doc["strategy"]
    assert isinstance(strategy, dict)
    assert strategy["buffer_size"] == rec.buffer_size
    assert strategy["server_lr"] == rec.strategy["server_lr"]
    assert config.serving.decay == rec.serving_decay


def test_a_named_strategy_keeps_the_plain_serving_decay_and_an_override_wins(
    tmp_path: Path,
) -> None:
    assert _doc(tmp_path, "fedasync", ServerTuning())["serving"] == {"decay": 0.95}
    tuned = ServerTuning(serving_decay=0.5)
    assert _doc(tmp_path, "auto", tuned)["serving"] == {"decay": 0.5}
