"""The dependency rule from DESIGN.md, checked two ways: import-linter over the source, and a
fresh interpreter that imports each package and looks at what came along."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a dev dependency; install fleetlearn[dev]"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("protocol", ["agent", "server", "models", "torch", "onnxruntime", "paho"]),
        ("protocol.messages", ["agent", "server", "models", "torch", "onnxruntime", "paho"]),
        ("protocol.signing", ["agent", "server", "models", "torch", "onnxruntime", "paho"]),
    ],
)
def test_importing_a_package_drags_nothing_forbidden(package: str, forbidden: list[str]) -> None:
    code = f"import sys, {package}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"{package} imported {out.stdout.strip()}"
