"""The start-up line that says which trainer backend and providers run, and why."""

from __future__ import annotations

import pytest

from agent import backend
from protocol.errors import ConfigError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_stock_onnxruntime_here_runs_on_the_cpu_provider() -> None:
    choice = backend.choose_backend("onnxruntime", machine="x86_64")
    assert choice.name == "onnxruntime" and choice.providers == (CPU,)
    assert "training-step graph on stock ONNX Runtime, x86_64" in choice.why


def test_cuda_first_when_the_build_offers_it() -> None:
    choice = backend.choose_backend(
        "onnxruntime", ["cuda", "cpu"], machine="aarch64", available=lambda: [CUDA, CPU]
    )
    assert choice.providers == (CUDA, CPU)
    assert "aarch64" in choice.why and "skipped" not in choice.why


def test_cuda_missing_is_skipped_and_said() -> None:
    choice = backend.choose_backend("onnxruntime", ["cuda"], available=lambda: [CPU])
    assert choice.providers == (CPU,)  # the CPU provider is always the last resort
    assert "CUDAExecutionProvider not offered by this onnxruntime build: skipped" in choice.why


def test_onnxruntime_not_installed_says_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> list[str]:
        raise ImportError("no onnxruntime")

    with pytest.raises(ConfigError, match=r"pip install 'fleetlearn\[agent\]'"):
        backend.choose_backend("onnxruntime", available=missing)


def test_provider_names() -> None:
    assert backend.provider_name("CUDA") == CUDA
    assert backend.provider_name("OpenVINOExecutionProvider") == "OpenVINOExecutionProvider"
    with pytest.raises(ConfigError, match="not an execution provider"):
        backend.provider_name("gpu")


def test_fake_backend_is_explicit() -> None:
    assert backend.choose_backend("fake").name == "fake"
