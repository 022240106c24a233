"""The ``builder`` package's import graph: no cycle between modules, counting function-level
(deferred) imports too (a deferred import that only dodges a cycle at import time is still a cycle in
the design), and no edge from a stage's package up to a later one (:data:`LAYERS`).

The graph is read with the standard library's :mod:`ast` (no import runs): an edge ``a -> b`` for
every ``import builder.b``, ``from builder import b``, ``from builder.b import x`` and relative
equivalent anywhere in ``a``'s file. A node is a module by its dotted name (``builder.run.steps.tag``;
a package is its ``__init__.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "builder"

#: The package's layers, lowest first: a module may import its own layer's and lower layers' modules
#: only. The pipeline's order: the matrix, the Engine and what it runs with, the files generated
#: from the matrix, the run, extensions of built images, the catalog of a run's images, the CLI.
LAYERS = ("files", "matrix", "engine", "generate", "sign", "run", "extend", "catalog", "cli")


def modules(package: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``package`` (named ``builder``)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = ["builder", *path.relative_to(package).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (its file ``path``) imports anywhere in it,
    relative imports resolved: ``from a import b`` counts ``a.b`` when that is a module, else ``a``.
    Raises SyntaxError for a file that does not parse."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join(parent + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known} - {name}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every module of ``package``."""
    found = modules(package)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm), each as a
    sorted tuple of module names: the modules that import each other, directly or round a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    """The index in :data:`LAYERS` of ``builder.<layer>[...]``; ``builder`` itself is the lowest."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def upward(edges: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import of a module in a later layer than the importer's."""
    return sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs if layer(b) > layer(a))


def test_the_graph_sees_deferred_and_relative_imports_and_subpackages(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from builder import b\n")
    (tmp_path / "b.py").write_text("import builder.c\n")
    (tmp_path / "c.py").write_text("from builder.a import f\nfrom .d import g\n")
    (tmp_path / "d.py").write_text("import os\nfrom builder.s import t\n")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "__init__.py").write_text("from . import t\n")
    (tmp_path / "s" / "t.py").write_text("from .. import d\nfrom ..e import x\nfrom . import u\n")
    (tmp_path / "s" / "u.py").write_text("from builder.s import t\n")
    (tmp_path / "e.py").write_text("")
    edges = {k.replace("builder.", ""): {v.replace("builder.", "") for v in vs} for k, vs in graph(tmp_path).items()}
    assert edges == {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"s.t"}, "s": {"s.t"}, "s.t": {"d", "e", "s.u"},
                     "s.u": {"s.t"}, "e": set()}
    assert cycles(graph(tmp_path)) == {("builder.a", "builder.b", "builder.c"),
                                       ("builder.d", "builder.s.t", "builder.s.u")}


def test_an_import_of_a_later_layer_is_upward():
    edges = {"builder.matrix.expand": {"builder.run.plan"}, "builder.run.taggers": {"builder.matrix.expand"}}
    assert upward(edges) == ["builder.matrix.expand -> builder.run.plan"]


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "; ".join("import cycle among " + ", ".join(c) for c in sorted(found))


def test_every_module_is_in_a_layer_and_no_import_goes_up():
    edges = graph()
    assert {m.split(".")[1] for m in edges if "." in m} <= set(LAYERS)
    assert upward(edges) == []
