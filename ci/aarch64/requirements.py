"""Print the pip requirements of the emulated aarch64 job, one per line.

    python ci/aarch64/requirements.py [--extra NAME ...]     (default: --extra agent)

What a device installs (`dependencies` + the `agent` extra of pyproject.toml) plus the test runner,
each pinned to the version installed in the running (host) environment where it is installed, so
the aarch64 run (and ci/other_python.sh) use the same releases as the x86_64 suite.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from importlib import metadata
from pathlib import Path

__all__ = ["requirements"]

TEST_TOOLS = ["pytest", "pytest-timeout", "hypothesis", "onnx"]  # onnx: test_personal builds graphs
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(pyproject: Path, extras: tuple[str, ...] = ("agent",)) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    out: list[str] = []
    for spec in [*wanted, *TEST_TOOLS]:
        match = _NAME.match(spec)
        if match is None:
            raise ValueError(f"unreadable requirement {spec!r} in {pyproject}")
        name = match.group(1)
        try:
            pinned = f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            pinned = spec
        if pinned not in out:  # an extra may repeat a dependency
            out.append(pinned)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--extra", action="append", help="pyproject extras (default: agent)")
    args = parser.parse_args()
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    print("\n".join(requirements(pyproject, tuple(args.extra or ["agent"]))))
