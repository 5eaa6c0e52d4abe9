"""The core package's layering (issue 14): ``scdl/`` never imports Slicer, Qt, CTK or VTK, and its modules import
each other without cycles (module-level and deferred imports alike), so every module can be read and tested
from the bottom up."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "scdl"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "PythonQt", "mrml", "vtkmodules", "SCDLSegmentLib", "SCDLTrainLib", "SCDLSlicerLib"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path) if m in files and m != name and not name.startswith(m + ".")}
    return graph


def test_core_never_imports_slicer_qt_ctk_or_vtk() -> None:
    offenders = {}
    for path in CORE.rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert not offenders, offenders


def test_models_package_has_no_import_cycle() -> None:
    graph = {k: {m for m in v if m.startswith("scdl.models")} for k, v in _graph().items()
             if k.startswith("scdl.models")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)
