"""Import `onnxruntime.training.api` without importing torch (FACTS.md, upstream issue 22070).

Two paths pull torch in: `onnxruntime/training/__init__.py` imports ortmodule and friends, and
`import onnxruntime` itself probes `onnxruntime.training.ortmodule` while validating the build.
So, before onnxruntime is first imported, we register a bare package module for
`onnxruntime.training` (with `__path__` pointing at the real folder, so `training.api` still
resolves) and make `onnxruntime.training.ortmodule` unimportable for the duration of that first
import (the probe catches ImportError and moves on). If onnxruntime is already loaded (a test or
benchmark process that also uses torch), we use it as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["import_training_api"]

_TRAINING = "onnxruntime.training"
_ORTMODULE = "onnxruntime.training.ortmodule"


def _install_bare_training_package() -> None:
    spec = importlib.util.find_spec("onnxruntime")  # locates the package without running it
    if spec is None or spec.origin is None:
        raise ImportError("onnxruntime is not installed (pip install onnxruntime-training-cpu)")
    folder = Path(spec.origin).parent / "training"
    if not (folder / "api").is_dir():
        raise ImportError(f"{folder}: this onnxruntime build has no training API")
    package = types.ModuleType(_TRAINING)
    package.__path__ = [str(folder)]
    package.__package__ = _TRAINING
    sys.modules[_TRAINING] = package
    sys.modules[_ORTMODULE] = None  # type: ignore[assignment]  # None makes the import fail
    try:
        ort = importlib.import_module("onnxruntime")
    finally:
        if sys.modules.get(_ORTMODULE, 0) is None:
            del sys.modules[_ORTMODULE]
    vars(ort)["training"] = package  # what `import onnxruntime.training` would have bound


def import_training_api() -> Any:
    """The `onnxruntime.training.api` module (CheckpointState, Module, Optimizer)."""
    if "onnxruntime" not in sys.modules and _TRAINING not in sys.modules:
        _install_bare_training_package()
    return importlib.import_module("onnxruntime.training.api")
