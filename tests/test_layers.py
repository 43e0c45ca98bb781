"""Import layering of src/rsuper, read with ``ast`` (nothing is imported): no cycles, the CLI on top.

Every import statement of a module counts: module level, inside functions (lazy imports) and under
``if TYPE_CHECKING:``. A type-only import is still a dependency a reader has to follow, and a cycle
hidden behind ``TYPE_CHECKING`` or a lazy import is the same tangle as a plain one.

Nodes: one per module (a package's ``__init__.py`` is the package's own name). ``from rsuper.a import b``
points at the module ``rsuper.a.b`` when that is a module, else at ``rsuper.a``. For the package-level
check a module belongs to its subpackage (``rsuper.evaluate.run`` -> ``rsuper.evaluate``); the top-level
modules (``rsuper.io``, ``rsuper.config``, ...) are each their own unit.

The CLI layer (``rsuper.cli``, ``rsuper.__main__``, ``rsuper.commands``) sits on top: it may import
anything and nothing else imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "rsuper"
CLI_LAYER = ("rsuper.cli", "rsuper.__main__", "rsuper.commands")
# Dependencies that would not make a cycle today but break the layering (importer -> imported, packages).
FORBIDDEN = {("rsuper.infer", "rsuper.train"): "prediction must not need the trainer"}
# Outside the CLI layer only these may import the synthetic world (phantoms, fake LLM server); the dataset
# code in particular must not.
SYNTHETIC_USERS = ("rsuper.synthetic", "rsuper.demo")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> dict[str, int]:
    """rsuper modules imported anywhere in ``source`` -> first line; relative imports resolved."""
    found: dict[str, int] = {}
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "rsuper" or target.startswith("rsuper."):
                found.setdefault(target, node.lineno)
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of its first import}, over every module under ``root``."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(paths)
    graph = {}
    for module, path in paths.items():
        found = imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", known)
        unknown = sorted(set(found) - known)
        assert not unknown, f"{module} imports modules that do not exist: {unknown}"
        graph[module] = {target: line for target, line in found.items() if target != module}
    return graph


def unit_of(module: str) -> str:
    """The subpackage a module belongs to (``rsuper.x``); top-level modules are their own unit."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, str]]:
    """unit -> {imported unit: one import that makes the edge, as ``module:line -> module``}."""
    units: dict[str, dict[str, str]] = {}
    for module, targets in graph.items():
        edges = units.setdefault(unit_of(module), {})
        for target, line in sorted(targets.items()):
            if unit_of(target) != unit_of(module):
                edges.setdefault(unit_of(target), f"{module}:{line} -> {target}")
    return units


def cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, set(component)) for component in components]


def _cycle_in(graph: dict[str, Iterable[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first node (breadth-first inside the component)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt not in component:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle found in component {sorted(component)}")


def _describe(cycle: list[str], edges: dict[str, dict]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        how = edges[a][b]
        steps.append(f"  {a} -> {b}  ({how if isinstance(how, str) else f'line {how}'})")
    return "\n".join(steps)


def _in_cli_layer(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in CLI_LAYER)


def test_no_import_cycle_between_modules():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n\n".join(_describe(c, graph) for c in found)


def test_no_import_cycle_between_packages():
    units = package_graph(import_graph())
    found = cycles(units)
    assert not found, "import cycles between packages:\n" + "\n\n".join(_describe(c, units) for c in found)


def test_the_cli_layer_is_on_top():
    wrong = [f"{module}:{line} imports {target}" for module, targets in import_graph().items()
             if not _in_cli_layer(module) for target, line in targets.items() if _in_cli_layer(target)]
    assert not wrong, "only the CLI layer may import rsuper.cli / rsuper.commands:\n" + "\n".join(wrong)


def test_forbidden_dependencies_and_synthetic_users():
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        for target, line in targets.items():
            why = FORBIDDEN.get((unit_of(module), unit_of(target)))
            if why is None and unit_of(target) == "rsuper.synthetic" and not _in_cli_layer(module) \
                    and unit_of(module) not in SYNTHETIC_USERS:
                why = "the synthetic world is for the CLI, the demo, tests and benchmarks"
            if why:
                wrong.append(f"{module}:{line} imports {target}: {why}")
    assert not wrong, "\n".join(wrong)


def test_the_parser_sees_lazy_type_checking_and_relative_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import rsuper.io\n"
        "from . import b\n"
        "from .b import thing\n"
        "from ..top import name\n"
        "if TYPE_CHECKING:\n"
        "    from rsuper.pkg.c import C\n"
        "def f():\n"
        "    from rsuper.pkg import d\n"
    )
    known = {"rsuper", "rsuper.io", "rsuper.top", "rsuper.pkg", "rsuper.pkg.a", "rsuper.pkg.b",
             "rsuper.pkg.c", "rsuper.pkg.d"}
    found = imports_of(source, "rsuper.pkg.a", False, known)
    assert found == {"rsuper.io": 2, "rsuper.pkg.b": 3, "rsuper.top": 5, "rsuper.pkg.c": 7, "rsuper.pkg.d": 9}


def test_cycles_are_found_and_printed():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    (cycle,) = cycles(graph)
    assert cycle == ["a", "b", "c", "a"]
    assert "  c -> a  (line 3)" in _describe(cycle, graph)
