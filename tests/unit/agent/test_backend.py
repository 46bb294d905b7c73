"""The start-up line that says which trainer backend runs, and the refusal where none can."""

from __future__ import annotations

import pytest

from agent import backend
from protocol.errors import ConfigError


def test_onnxruntime_found_here() -> None:
    choice = backend.choose_backend("onnxruntime", machine="x86_64")
    assert choice.name == "onnxruntime" and "found on x86_64" in choice.why


def test_aarch64_without_training_api_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "_training_api_present", lambda: False)
    with pytest.raises(
        ConfigError, match="no onnxruntime-training wheel for Linux aarch64"
    ) as info:
        backend.choose_backend("onnxruntime", machine="aarch64")
    assert "--enable_training_apis" in str(info.value)


def test_x86_without_training_api_says_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "_training_api_present", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'fleetlearn\[agent\]'"):
        backend.choose_backend("onnxruntime", machine="x86_64")


def test_fake_backend_is_explicit() -> None:
    assert backend.choose_backend("fake").name == "fake"
