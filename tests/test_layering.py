"""The package's import graph, read from the source (nothing is imported): no import cycles, and no stage imports
a stage above it.

Every import statement counts, at any depth: an import inside a function runs later, but it still ties the two
modules together, and a lazy import is how most cycles hide.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"

# The stages from the bottom up. A module may import modules of its own layer or of a layer listed before it, never
# one listed after it. Keys of each layer are the names right under medseg/ (a module or a subpackage); "medseg"
# stands for the package's own __init__.py. A new top-level module must be placed here before its tests pass.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("medseg", "io", "config", "errors", "runtime", "parallel", "log", "progress", "viz", "schemas"),
    "data and models": ("data", "models", "tasks", "checkpoint", "objects", "postprocess", "export", "bundle"),
    "inference": ("inference",),
    "engine": ("engine",),
    "evaluation": ("evaluation",),
    "reporting": ("reporting",),
    "api": ("api",),
    "command line": ("cli", "__main__"),
}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``where`` (path:line)."""

    source: str
    target: str
    where: str


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` (a package's name is its __init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` loads last: itself if it is one of ours, else its longest prefix that is."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _absolute(node: ast.ImportFrom, module: str, modules: dict[str, Path]) -> str:
    """The absolute name a (possibly relative) ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    is_package = modules[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imported(node: ast.AST, module: str, modules: dict[str, Path]) -> list[str]:
    """The names of our modules one import statement loads."""
    if isinstance(node, ast.Import):
        return [m for alias in node.names if (m := _deepest_module(alias.name, modules))]
    if isinstance(node, ast.ImportFrom):
        origin = _absolute(node, module, modules)
        targets = []
        for alias in node.names:  # `from medseg.data import synthetic` loads the submodule, not just the package
            sub = f"{origin}.{alias.name}"
            targets.append(sub if sub in modules else _deepest_module(origin, modules))
        return [t for t in targets if t]
    return []


def import_edges(package: Path = PACKAGE) -> list[Edge]:
    """Every import of one of the package's modules by another, wherever in the file it is written."""
    modules = module_files(package)
    root = package.parent
    edges: dict[Edge, None] = {}  # ordered and without repeats: `from x import a, b` is one edge
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, module, modules):
                if target != module:
                    edges[Edge(module, target, f"{path.relative_to(root)}:{node.lineno}")] = None
    return list(edges)


def _graph(edges: list[Edge]) -> dict[str, dict[str, Edge]]:
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    return graph


def _strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Tarjan's components with more than one module (iterative, so a deep graph cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _shortest_cycle(graph: dict[str, dict[str, Edge]], members: list[str]) -> list[Edge]:
    """The shortest way from the component's first module back to itself, as the edges that make it."""
    start, inside = members[0], set(members)
    came_from: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target, edge in sorted(graph[node].items()):
            if target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_from[path[0].source])
                return path
            if target in inside and target not in came_from:
                came_from[target] = edge
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in its own component")


def import_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One shortest cycle for every group of modules that import each other, directly or around a loop."""
    graph = _graph(edges)
    return [_shortest_cycle(graph, members) for members in _strongly_connected(graph)]


def describe_cycle(cycle: list[Edge]) -> str:
    return " -> ".join(f"{e.source} ({e.where})" for e in cycle) + f" -> {cycle[0].source}"


def layer_of(module: str) -> str:
    """The layer of a dotted module name, by its name right under medseg/."""
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else parts[0]
    for layer, units in LAYERS.items():
        if unit in units:
            return layer
    raise AssertionError(f"{module} is in no layer: add {unit!r} to LAYERS in tests/test_layering.py")


def upward_imports(edges: list[Edge]) -> list[str]:
    """Every import of a module in a higher layer, as one readable line each."""
    rank = {layer: n for n, layer in enumerate(LAYERS)}
    found = []
    for e in edges:
        low, high = layer_of(e.source), layer_of(e.target)
        if rank[high] > rank[low]:
            found.append(f"{e.where}: {e.source} ({low}) imports {e.target} ({high})")
    return found


def test_the_package_has_no_import_cycle():
    cycles = import_cycles(import_edges())
    if cycles:
        pytest.fail("import cycles:\n" + "\n".join(describe_cycle(c) for c in cycles), pytrace=False)


def test_no_module_imports_a_higher_layer():
    found = upward_imports(import_edges())
    if found:
        pytest.fail("imports of a higher layer:\n" + "\n".join(found), pytrace=False)


def test_every_module_has_a_layer():
    for module in module_files(PACKAGE):
        layer_of(module)  # raises, naming the module, for one nobody placed


def test_the_graph_sees_function_level_submodule_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def late():\n    from pkg.top import helper\n    return helper\n")
    (pkg / "top.py").write_text("import pkg.sub.leaf\nfrom .sub import leaf as _leaf\n\n\ndef helper():\n    pass\n")
    (pkg / "alone.py").write_text("import os\nfrom pkg import top\n")
    edges = {(e.source, e.target) for e in import_edges(pkg)}
    assert edges == {
        ("pkg.sub", "pkg.sub.leaf"),
        ("pkg.sub.leaf", "pkg.top"),
        ("pkg.top", "pkg.sub.leaf"),
        ("pkg.alone", "pkg.top"),
    }
    cycles = import_cycles(import_edges(pkg))
    assert len(cycles) == 1
    assert describe_cycle(cycles[0]) == ("pkg.sub.leaf (pkg/sub/leaf.py:2) -> pkg.top (pkg/top.py:1) -> pkg.sub.leaf")


def test_an_upward_import_is_named_with_its_line():
    edges = [
        Edge("medseg.data.base", "medseg.inference.infer", "medseg/data/base.py:7"),
        Edge("medseg.cli", "medseg.io", "medseg/cli.py:3"),
    ]
    assert upward_imports(edges) == [
        "medseg/data/base.py:7: medseg.data.base (data and models) imports medseg.inference.infer (inference)"
    ]


def test_the_real_graph_is_read():
    """A reader that found no imports would pass the two checks above: make sure it sees known ones."""
    edges = {(e.source, e.target) for e in import_edges()}
    assert ("medseg.__main__", "medseg.cli") in edges
    assert any(s == "medseg.cli" and t.startswith("medseg.api") for s, t in edges)
    assert len(module_files(PACKAGE)) > 30
