"""Shared by the demo's integration tests: one artifacts cache per session, demo subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import mosquitto_dev  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private FLEETLEARN_CACHE: tests export their own models, never touch ~/.cache."""
    return tmp_path_factory.mktemp("fleetlearn-cache")


@pytest.fixture
def demo_env(demo_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("FLEETLEARN_CACHE", str(demo_cache))
    yield os.environ | {"PYTHONPATH": str(REPO), "FLEETLEARN_CACHE": str(demo_cache)}


def run_demo_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """`python -m fleetlearn demo ARGS` as a user would run it; returns its output."""
    done = subprocess.run(
        [sys.executable, "-m", "fleetlearn", "demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def read_report(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "report.json").read_text())
    return doc
