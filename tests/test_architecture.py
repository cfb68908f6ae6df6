"""The package's modules depend on each other in one direction (STYLE: "Dependencies point one
way"): a cycle means two jobs share a module, and an upgrade or a refactor then breaks both."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gmm_vae"


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at top level or inside a function."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m in modules:
        tree = ast.parse((PACKAGE / f"{m}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] != "gmm_vae":
                    continue
                if len(parts) > 1:
                    graph[m].add(parts[1])
                else:
                    graph[m].update(a.name for a in node.names if a.name in modules)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_package_imports_have_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_lower_layers_never_import_the_cli_or_pipeline() -> None:
    graph = import_graph()
    for low in ("report", "evaluation", "metrics", "callbacks", "analysis_callbacks", "model",
                "data", "gmm", "summarize"):
        assert not graph[low] & {"cli", "pipeline", "rerun"}, (low, graph[low])
