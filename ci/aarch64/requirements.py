"""Print the pip requirements of the emulated aarch64 job, one per line.

What a device installs (`dependencies` + the `agent` extra of pyproject.toml) plus the test runner,
each pinned to the version installed in the running (host) environment where it is installed, so
the aarch64 run uses the same releases as the x86_64 one it is compared with.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

__all__ = ["requirements"]

TEST_TOOLS = ["pytest", "pytest-timeout", "hypothesis", "onnx"]  # onnx: test_personal builds graphs
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["agent"], *TEST_TOOLS]
    out = []
    for spec in wanted:
        match = _NAME.match(spec)
        if match is None:
            raise ValueError(f"unreadable requirement {spec!r} in {pyproject}")
        name = match.group(1)
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(spec)
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
    print("\n".join(requirements(root / "pyproject.toml")))
