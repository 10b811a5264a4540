"""Fail when ftcalc's imports form a cycle or go up the layers (ARCHITECTURE in DEVELOPERS.md).

    python scripts/check_imports.py          # prints the violations; exit 1 if any, else 0

Every ``import`` and ``from ... import`` of an ftcalc module counts, at the top of a file or inside a
function: a function-level import is an edge too, since it runs whenever that function does. A module
may import its own package's modules and any module of a lower layer; the graph of all modules must
have no cycle. ``ftcalc/__init__.py`` (the lazy public facade) and ``ftcalc/executor.py`` (the
``python -m ftcalc.executor`` entry point) sit above every layer.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module's layer is the longest prefix of its dotted name listed here.
LAYERS: list[tuple[str, ...]] = [
    ("ftcalc.errors", "ftcalc._paths", "ftcalc._version", "ftcalc.validation", "ftcalc.safe_write",
     "ftcalc.extras", "ftcalc.sizes"),
    ("ftcalc.tables",),
    ("ftcalc.model.units", "ftcalc.model.options"),
    ("ftcalc.model.allocsim",),
    ("ftcalc.model",),
    ("ftcalc.solver",),
    ("ftcalc.train",),
    ("ftcalc.measure",),
    ("ftcalc.integrations",),
    ("ftcalc.viz",),
    ("ftcalc.cli",),
    ("ftcalc", "ftcalc.executor"),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the prefix that placed it)."""
    best = (-1, "")
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best[1]):
                best = (i, p)
    if best[0] < 0:
        raise SystemExit(f"check_imports: {module} is in no layer; add it to LAYERS")
    return best


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> list[tuple[str, int]]:
    """The ftcalc modules ``path`` imports, with line numbers (``from pkg import mod`` resolves to pkg.mod)."""
    me = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "ftcalc"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            if base.split(".")[0] != "ftcalc":
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in modules else base, node.lineno))
    external = ("ftcalc._data",)  # data/, installed as a package: no code
    return sorted({(m, n) for m, n in out if m != me and not m.startswith(external)})


def package_of(module: str, is_pkg: bool) -> str:
    return module if is_pkg else module.rsplit(".", 1)[0]


def check(root: Path = ROOT) -> list[str]:
    files = sorted((root / "ftcalc").rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    is_pkg = {module_name(f, root): f.name == "__init__.py" for f in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for f in files:
        me = module_name(f, root)
        my_layer, _ = layer_of(me)
        for target, line in imports_of(f, modules, root):
            if target not in modules:
                # a name from a package's __init__ or a missing module: resolve to the nearest module
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
            if target == me or target not in modules:
                continue
            graph[me].add(target)
            their_layer, prefix = layer_of(target)
            same_package = package_of(target, is_pkg[target]) == package_of(me, is_pkg[me]) or (
                is_pkg[me] and target.startswith(me + "."))
            if their_layer > my_layer and not same_package:
                problems.append(f"upward import: {f.relative_to(root)}:{line} ({me}, layer {my_layer}) imports "
                                f"{target} (layer {their_layer}, {prefix})")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_a_cycle(sorted(comp), graph))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _a_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A concrete cycle through the component's first module (breadth-first back to it)."""
    comp = set(component)
    start = component[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    print(f"check_imports: {len(problems)} problem(s)" if problems else "check_imports: no cycle, no upward import")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
