"""The demo's quiet_logs lasts for the run only: it must not silence the process afterwards."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fleet.demo.run import DemoOptions, run_demo
from protocol.errors import ConfigError


def test_logger_levels_are_restored_even_when_the_demo_fails(tmp_path: Path) -> None:
    server = logging.getLogger("server")
    before = server.level
    server.setLevel(logging.INFO)
    try:
        with pytest.raises(ConfigError):  # fails after quieting the loggers
            run_demo(DemoOptions(codec="no-such-codec", out=tmp_path))
        assert server.level == logging.INFO  # a later caplog.set_level(WARNING) still sees logs
    finally:
        server.setLevel(before)
