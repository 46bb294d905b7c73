"""The demo's export cache names the local optimizer it exports with."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleet.demo import artifacts_cache
from models.local_optimizer import DEFAULT_OPTIMIZER, default_learning_rate
from protocol.errors import DataError


def _export_command(model: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    monkeypatch.setenv("FLEETLEARN_CACHE", str(tmp_path))
    seen: list[list[str]] = []

    def refuse(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "no torch here")

    monkeypatch.setattr(subprocess, "run", refuse)
    with pytest.raises(DataError, match="exporting"):
        artifacts_cache.cached_artifacts(model, (64,), 10)
    return seen[0]


def test_zoo_exports_name_the_default_optimizer_and_rate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cache made with another local optimizer (AdamW before SGD became the default) must not
    be reused: the optimizer and rate are in the export command and in the cache key."""
    cmd = _export_command("mlp", monkeypatch, tmp_path)
    assert DEFAULT_OPTIMIZER == "sgd"
    i = cmd.index("--optimizer")
    assert cmd[i + 1 : i + 4] == ["sgd", "--lr", "0.3"]
    assert float(cmd[i + 3]) == default_learning_rate("sgd")
    assert artifacts_cache._local_optimizer("mlp") == ("sgd", 0.3)
    assert artifacts_cache._local_optimizer("minilm-lora") is None


def test_minilm_exports_keep_their_own_optimizer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cmd = _export_command("minilm-lora", monkeypatch, tmp_path)
    assert "--optimizer" not in cmd and "--lr" not in cmd


def test_default_learning_rate_per_optimizer() -> None:
    assert default_learning_rate("sgd") == 0.3
    assert default_learning_rate("adamw") == 1e-3
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        default_learning_rate("lion")
