"""The core package's layering (issues 14 and 26): ``scdl/`` never imports Slicer, Qt, CTK or VTK, and its modules
import each other without cycles, so every module can be read and tested from the bottom up.

The import graph is built with :mod:`ast` from every ``import`` statement of every file, at any depth (deferred
imports inside functions and ``if TYPE_CHECKING:`` blocks count like module-level ones), relative imports resolved.
Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so an import of a module is also an
import of each package above it (except the importer's own packages, which are already running; in the package
graph, a package file that imports nothing, such as ``scdl/io/__init__.py``, runs nothing and counts for nothing).
Two graphs must be acyclic:

- modules: ``scdl.io.atomic -> scdl.io.verify -> scdl.io.atomic`` is a cycle;
- packages (``scdl.io``, ``scdl.labels``, ``scdl.training``, ... and the top-level modules such as
  ``scdl.errors``): ``scdl.training -> scdl.synth -> scdl.phantom -> scdl.training`` is a cycle even when no
  module cycle exists. One exception, checked below: ``scdl.io``'s file layer (:data:`FILE_LAYER`: atomic writes,
  their read-back, extensions, input paths) is its own node, below every package (it imports nothing of
  ``scdl`` but ``scdl.errors``): label tables are written through it and image formats use label tables.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "scdl"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "PythonQt", "mrml", "vtkmodules", "SCDLSegmentLib", "SCDLTrainLib", "SCDLSlicerLib"}
#: The modules of ``scdl.io`` that every layer may write and check paths through; a node of their own in the
#: package graph. They import nothing of ``scdl`` but ``scdl.errors`` and each other.
FILE_LAYER = {"scdl.io.atomic", "scdl.io.verify", "scdl.io.formats", "scdl.io.paths"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_names(path: Path, name: str) -> list[tuple[str, int]]:
    """Every dotted name a file imports (``from a import b``: ``a`` and ``a.b``), at any depth of the file,
    relative imports resolved against ``name`` (the file's module); with the line of the statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found.extend((f"{module}.{alias.name}", node.lineno) for alias in node.names)
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _files() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py")}


def _graph() -> dict[str, dict[str, int]]:
    """Module -> {imported core module: line of the first import}; each import also imports its packages."""
    files = _files()
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        own = set(_ancestors(name))
        for dotted, line in _imported_names(path, name):
            while dotted and dotted not in files:          # ``from scdl.io.image import read_ct``: the module
                dotted = dotted.rpartition(".")[0]
            if not dotted:
                continue
            for module in [*_ancestors(dotted), dotted]:
                if module in files and module != name and module not in own:
                    edges.setdefault(module, line)
        graph[name] = edges
    return graph


def _package(module: str) -> str:
    """The package-graph node of a module: its top-level package (``scdl.io.image`` -> ``scdl.io``), the module
    itself for a top-level module (``scdl.errors``), ``scdl.io[files]`` for :data:`FILE_LAYER`."""
    if module in FILE_LAYER:
        return "scdl.io[files]"
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:            # the shortest way back to the component's first node
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            following = []
            for node in frontier:
                for nxt in sorted(graph.get(node, {})):
                    if nxt == start:
                        cycle = paths[node] + [start]
                        break
                    if nxt in component and nxt not in paths:
                        paths[nxt] = paths[node] + [nxt]
                        following.append(nxt)
                if cycle:
                    break
            frontier = following
        cycles.append(cycle)
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, str]]) -> str:
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + ":\n    " + "\n    ".join(steps)


def test_core_never_imports_slicer_qt_ctk_or_vtk() -> None:
    offenders = {}
    for name, path in _files().items():
        bad = {m for m, _ in _imported_names(path, name) if m.split(".")[0] in FORBIDDEN}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert not offenders, offenders


def test_core_modules_have_no_import_cycle() -> None:
    files = _files()
    graph = {a: {b: f"{files[a].relative_to(REPO)}:{line}" for b, line in edges.items()}
             for a, edges in _graph().items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles between modules:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_core_packages_have_no_import_cycle() -> None:
    files = _files()
    modules = _graph()
    graph: dict[str, dict[str, str]] = {}
    for a, edges in modules.items():
        for b, line in sorted(edges.items()):
            pa, pb = _package(a), _package(b)
            inert = files[b].name == "__init__.py" and not modules[b]     # a package file that imports nothing
            if pa != pb and not inert:
                graph.setdefault(pa, {}).setdefault(pb, f"{files[a].relative_to(REPO)}:{line} imports {b}")
    cycles = _cycles(graph)
    assert not cycles, "import cycles between packages:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_the_file_layer_imports_only_errors_and_itself() -> None:
    graph = _graph()
    missing = sorted(FILE_LAYER - set(graph))
    assert not missing, f"FILE_LAYER names modules that do not exist: {missing}"
    outside = {m: sorted(set(graph[m]) - FILE_LAYER - {"scdl.errors", "scdl.io"}) for m in sorted(FILE_LAYER)}
    outside = {m: deps for m, deps in outside.items() if deps}
    assert not outside, f"the file layer imports above itself: {outside}"


def test_the_graph_sees_deferred_relative_and_package_imports(tmp_path: Path) -> None:
    """The walker itself: a deferred import, ``from . import x`` and a relative ``from ..a import b``."""
    source = ("import os\n"
              "def f():\n"
              "    from scdl.io.image import read_ct\n"
              "    from . import table\n"
              "    from ..io import atomic\n"
              "    from .names import normalize_name\n")
    path = tmp_path / "mapping.py"
    path.write_text(source, encoding="utf-8")
    names = {n for n, _ in _imported_names(path, "scdl.labels.mapping")}
    assert {"os", "scdl.io.image", "scdl.io.image.read_ct", "scdl.labels.table", "scdl.io.atomic",
            "scdl.labels.names"} <= names
    cycle = _cycles({"a": {"b": "x"}, "b": {"c": "y"}, "c": {"a": "z"}, "d": {"a": "w"}})
    assert cycle == [["a", "b", "c", "a"]]
