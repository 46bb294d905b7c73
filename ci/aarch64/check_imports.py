"""Import every module a device runs and prove none of them even tries to import torch.

Run by the emulated aarch64 job (ci/aarch64/run.sh), but works on any interpreter:

    python ci/aarch64/check_imports.py

A finder at the head of `sys.meta_path` refuses and records every import of a build-time-only
package (torch, onnx, the server, the model builders, the simulator), so a guarded
`try: import torch` is caught too, not only one that succeeds. Exit status 1 names each attempt
and the module that made it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import pkgutil
import platform
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["DEVICE_PACKAGES", "FORBIDDEN", "main"]

DEVICE_PACKAGES = ("protocol", "transport", "agent")  # what `fleetlearn agent` runs
ENTRY_POINTS = ("fleetlearn.cli",)  # the console script a device starts the agent with
FORBIDDEN = frozenset({"torch", "onnx", "onnxscript", "server", "models", "fleet"})


class Tripwire(importlib.abc.MetaPathFinder):
    """Refuses imports of FORBIDDEN top-level packages and remembers who asked."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in FORBIDDEN:
            self.attempts.append(f"{fullname} (imported from {_importer()})")
            raise ImportError(f"{fullname} is build-time only; a device must never import it")
        return None


def _importer() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "importlib" not in frame.filename and not frame.filename.endswith(__file__):
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        names.append(info.name)
    return names


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's packages
    tripwire = Tripwire()
    sys.meta_path.insert(0, tripwire)
    failures: list[str] = []
    imported = 0
    for name in [*(m for p in DEVICE_PACKAGES for m in _modules(p)), *ENTRY_POINTS]:
        try:
            importlib.import_module(name)
            imported += 1
        except ImportError as exc:  # a forbidden import or a dependency missing on this platform
            failures.append(f"{name}: {exc}")
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in FORBIDDEN)
    print(
        f"check_imports: {platform.machine()} CPython {platform.python_version()}: "
        f"{imported} modules imported"
    )
    for line in [
        *failures,
        *(f"attempted: {a}" for a in tripwire.attempts),
        *(f"loaded: {m}" for m in loaded),
    ]:
        print(f"check_imports: FAIL {line}")
    return 1 if failures or tripwire.attempts or loaded else 0


if __name__ == "__main__":
    sys.exit(main())
