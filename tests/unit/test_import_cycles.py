"""No import circle anywhere in the project: a module that needs another's private parts gets a
small interface or returns actions instead (STYLE.md 18-19)."""

from __future__ import annotations

from pathlib import Path

from tests.support.import_graph import find_cycles, import_graph

ROOT = Path(__file__).resolve().parents[2]


def test_the_finder_sees_circles_of_any_length() -> None:
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a", "d"},
        "d": set(),
        "e": {"f"},
        "f": {"e"},
        "g": {"g"},
    }
    assert find_cycles(graph) == [["a", "b", "c"], ["e", "f"]]


def test_the_graph_reads_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_circle_in_any_package() -> None:
    graph = import_graph(ROOT)
    assert "server.core" in graph and "agent.runtime" in graph  # the walk found the packages
    assert find_cycles(graph) == []
