"""Test helpers of the static checks of both modules (``test_slicer_static.py``, ``test_slicer_train_static.py``):
CMake lists, files on disk, ``ui.`` names, imports, and what importing a module file loads."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

from harness import SHARED_LIB_DIR

#: Widget glue shared by both modules (``SCDLSlicerLib.panel``): its ``ui.`` names are in both .ui files.
PANEL_FILE = SHARED_LIB_DIR / "panel.py"
#: The paper both module descriptors cite.
PAPER_TITLE = "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image Segmentation"


def cmake_list(cmake_file: Path, variable: str, module_name: str) -> set:
    """The entries of ``set(<variable> ...)`` in a module's CMakeLists.txt, ``${MODULE_NAME}`` expanded."""
    match = re.search(rf"set\({variable}\s+(.*?)\)", cmake_file.read_text(encoding="utf-8"), re.S)
    assert match, variable
    return {line.strip().replace("${MODULE_NAME}", module_name) for line in match.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")}


def files_on_disk(module_dir: Path) -> tuple[set, set]:
    """(Python files, files under Resources/) of a module folder, relative to it (``__pycache__`` left out)."""
    scripts = {p.relative_to(module_dir).as_posix() for p in module_dir.rglob("*.py") if "__pycache__" not in p.parts}
    resources = {p.relative_to(module_dir).as_posix() for p in (module_dir / "Resources").rglob("*") if p.is_file()}
    return scripts, resources


def ui_names_used(*files: Path) -> set:
    """Every ``ui.<name>`` the given source files use."""
    return {name for path in files for name in re.findall(r"\bui\.([A-Za-z_]\w*)", path.read_text(encoding="utf-8"))}


def imports(tree: ast.AST):
    """Top-level package names of every absolute import anywhere in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def file_scope_imports(path: Path) -> set:
    """Packages a file imports when it is imported: its file-scope imports, try/except blocks included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {n for stmt in tree.body if isinstance(stmt, (ast.Import, ast.ImportFrom)) for n in imports(ast.Module([stmt], []))}
    for stmt in tree.body:
        if isinstance(stmt, ast.Try):
            top |= set(imports(ast.Module(stmt.body, [])))
    return top


def names_in_class(path: Path, class_name: str) -> set:
    """The plain names (``ast.Name``) used anywhere in class ``class_name`` of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {n.id for n in ast.walk(cls) if isinstance(n, ast.Name)}


def heavy_modules_after_import(module: str, path: list) -> list:
    """The heavy packages (torch, SimpleITK, monai, scdl, safetensors, slicerio) that ``import harness, <module>``
    loads in a fresh interpreter with ``path`` in front of sys.path."""
    code = (
        "import sys; sys.path[:0] = %r\n"
        "import harness, %s\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'SimpleITK', 'monai', 'scdl', 'safetensors', 'slicerio'})\n"
        "print(heavy)\n"
    ) % ([str(p) for p in path], module)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def check_descriptor(module_class, module_file: Path, title: str) -> None:
    """The module descriptor: title, category, the paper cited in help and acknowledgement, texts through ``_()``."""
    parent = types.SimpleNamespace(path=str(module_file))
    module_class(parent)
    assert parent.title == title and parent.categories == ["Segmentation"]
    assert PAPER_TITLE in parent.helpText
    assert "arXiv 2603.05202" in parent.helpText and "Su et al." in parent.acknowledgementText
    source = module_file.read_text(encoding="utf-8")
    for attribute in ("title", "helpText", "acknowledgementText"):
        assert re.search(rf"self\.parent\.{attribute} = _\(", source), attribute


def png_size(path: Path) -> tuple:
    """(width, height) of a PNG file; fails if the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
