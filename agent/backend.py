"""Which trainer backend and execution providers this device runs, and why - said at start-up.

The default backend runs the exported training-step graph on stock `onnxruntime`, which has
wheels for x86_64 and aarch64 (Raspberry Pi, Jetson) and CPython 3.11-3.13; `onnxruntime-gpu`
adds the CUDA execution provider (the Jetson path). `trainer.providers` in agent.toml lists the
providers in order of preference ("cpu", "cuda" or ORT's full names); one this build does not
offer is skipped and said so, and the CPU provider is always the last resort.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.errors import ConfigError

__all__ = ["PROVIDER_NAMES", "BackendChoice", "choose_backend", "provider_name"]

PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_CPU = PROVIDER_NAMES["cpu"]


@dataclass(frozen=True)
class BackendChoice:
    name: str  # what load_trainer() gets
    providers: tuple[str, ...]  # ORT execution providers, most preferred first
    why: str  # one line for the start-up log


def provider_name(text: str) -> str:
    """'cpu' | 'cuda' | a full ORT provider name -> the full name; ConfigError otherwise."""
    full = PROVIDER_NAMES.get(text.lower(), text)
    if not full.endswith("ExecutionProvider"):
        raise ConfigError(
            f"trainer.providers: {text!r} is not an execution provider; use cpu, cuda or "
            "an ONNX Runtime name like CUDAExecutionProvider"
        )
    return full


def _available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def choose_backend(
    requested: str,
    providers: Sequence[str] = ("cpu",),
    machine: str | None = None,
    available: Callable[[], list[str]] = _available_providers,
) -> BackendChoice:
    """Resolve the configured backend and providers on this machine."""
    arch = machine or platform.machine()
    if requested == "fake":
        return BackendChoice("fake", (), "trainer backend 'fake' (configured): no real training")
    if requested != "onnxruntime":
        raise ConfigError(f"trainer_backend: unknown backend {requested!r}")
    try:
        offered = available()
    except ImportError as exc:
        raise ConfigError(
            "trainer_backend 'onnxruntime': onnxruntime is not installed; "
            "pip install 'fleetlearn[agent]' (stock onnxruntime, or onnxruntime-gpu for CUDA)"
        ) from exc
    chosen: list[str] = []
    skipped: list[str] = []
    for name in (provider_name(p) for p in providers):
        if name in offered and name not in chosen:
            chosen.append(name)
        elif name not in offered:
            skipped.append(name)
    if _CPU not in chosen:
        chosen.append(_CPU)  # every build has it; the last resort
    why = (
        f"trainer backend 'onnxruntime': training-step graph on stock ONNX Runtime, {arch}, "
        f"providers {', '.join(chosen)}"
    )
    if skipped:
        why += f" ({', '.join(skipped)} not offered by this onnxruntime build: skipped)"
    return BackendChoice("onnxruntime", tuple(chosen), why)
