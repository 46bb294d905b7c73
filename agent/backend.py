"""Which trainer backend this device runs, and why - said once, at start-up.

The ONNX Runtime training API ships only in `onnxruntime-training(-cpu)` 1.19.2 wheels for
x86_64 (and Windows/macOS); there is no aarch64 Linux wheel (FACTS.md). On a Raspberry Pi or a
Jetson the API needs ONNX Runtime built from source with `--enable_training_apis`. We look for the
module without importing it: importing `onnxruntime.training` would pull in torch.
"""

from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass

from protocol.errors import ConfigError

__all__ = ["BackendChoice", "choose_backend"]

_SOURCE_BUILD = (
    "build ONNX Runtime from source with --build_wheel --enable_training_apis on the device "
    "(or cross-compile) and pip install that wheel into the agent's venv; see agent/README.md"
)


@dataclass(frozen=True)
class BackendChoice:
    name: str  # what load_trainer() gets
    why: str  # one line for the start-up log


def _training_api_present() -> bool:
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    from pathlib import Path

    return any((Path(loc) / "training" / "api").is_dir() for loc in spec.submodule_search_locations)


def choose_backend(requested: str, machine: str | None = None) -> BackendChoice:
    """Resolve the configured backend on this machine; ConfigError says what to do if it can't."""
    arch = machine or platform.machine()
    if requested == "fake":
        return BackendChoice("fake", "trainer backend 'fake' (configured): no real training")
    if requested != "onnxruntime":
        raise ConfigError(f"trainer_backend: unknown backend {requested!r}")
    if _training_api_present():
        return BackendChoice(
            "onnxruntime",
            f"trainer backend 'onnxruntime': ONNX Runtime on-device training API found on {arch}",
        )
    if arch in ("aarch64", "arm64", "armv7l"):
        raise ConfigError(
            f"trainer_backend 'onnxruntime': the ONNX Runtime training API is not installed, and "
            f"PyPI has no onnxruntime-training wheel for Linux {arch}; {_SOURCE_BUILD}"
        )
    raise ConfigError(
        "trainer_backend 'onnxruntime': the ONNX Runtime training API is not installed; "
        "pip install 'fleetlearn[agent]' (onnxruntime-training-cpu 1.19.2, x86_64, Python <= 3.11)"
    )
