"""The import graph's shape: no circle anywhere in the project (a module that needs another's
private parts gets a small interface or returns actions instead), and the server's leaves stay
leaves: its kernels and the admitted-update value types import nothing of the server above them,
so whoever owns a step (the optimiser owns its fused step) calls them without workarounds."""

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


# The server's leaves: numeric kernels and the value types every stage after admission reads.
SERVER_LEAVES = ("server.kernels", "server.admitted")


def _is_leaf(module: str) -> bool:
    return any(module == leaf or module.startswith(leaf + ".") for leaf in SERVER_LEAVES)


def test_no_import_in_server_runs_back_up_from_a_leaf() -> None:
    graph = import_graph(ROOT)
    leaves = sorted(m for m in graph if _is_leaf(m))
    assert {"server.kernels.fused", "server.kernels.ingest", "server.admitted"} <= set(leaves)
    upward = {
        leaf: sorted(t for t in graph[leaf] if not _is_leaf(t) and not t.startswith("protocol"))
        for leaf in leaves
    }
    assert {leaf: up for leaf, up in upward.items() if up} == {}


def test_the_optimiser_and_ingest_import_only_leaves_of_the_server() -> None:
    graph = import_graph(ROOT)
    for module in ("server.optimizers", "server.ingest"):
        above = sorted(t for t in graph[module] if t.startswith("server") and not _is_leaf(t))
        assert above == [], f"{module} imports {above}"
