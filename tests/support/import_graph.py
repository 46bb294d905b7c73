"""The project's import graph read statically with `ast`: every `import` and `from ... import`,
at the top of a module, inside functions and under `if TYPE_CHECKING:` alike (a circle that only
type checking closes is still a circle a reader has to hold in their head)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["PACKAGES", "find_cycles", "import_graph"]

PACKAGES = ("protocol", "transport", "agent", "server", "models", "fleet", "fleetlearn", "ci")


def _module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _resolve(name: str, known: Mapping[str, Path]) -> str | None:
    """The project module `name` lands in (a package's `__init__` for names defined there)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, path: Path, known: Mapping[str, Path]) -> Iterable[str]:
    """`from a import b` names module a.b when there is one, else whatever a's package defines."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (itself excluded)."""
    files = _module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = {_resolve(name, files) for name in _imported_names(module, path, files)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return sorted(cycles)
