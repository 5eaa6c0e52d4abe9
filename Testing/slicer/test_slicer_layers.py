"""The Slicer side's layers (docs/ARCHITECTURE.md): module file -> its ``…Lib`` -> ``SCDLSlicerLib`` -> ``scdl``.

Static checks: the two modules never import each other (nor each other's ``…Lib``); the shared library imports
neither module; no Qt below the module files; the shared library's CMake lists equal its files; the only
``sys.path`` edit of the Slicer side is the developer-checkout lookup, the same in both ``…Lib/__init__.py``.
"""

from __future__ import annotations

import ast
import re
import sys

import pytest

from harness import MODULE_DIR, REPO, SHARED_LIB_DIR, TRAIN_DIR
from statictools import file_scope_imports, imports

SEGMENT_SIDE = {"SCDLSegment", "SCDLSegmentLib"}
TRAIN_SIDE = {"SCDLTrain", "SCDLTrainLib"}


def _python_files(folder):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imported(path) -> set:
    return set(imports(ast.parse(path.read_text(encoding="utf-8"))))


@pytest.mark.parametrize("path", _python_files(MODULE_DIR), ids=lambda p: p.relative_to(REPO).as_posix())
def test_scdlsegment_never_imports_scdltrain(path):
    assert not _imported(path) & TRAIN_SIDE


@pytest.mark.parametrize("path", _python_files(TRAIN_DIR), ids=lambda p: p.relative_to(REPO).as_posix())
def test_scdltrain_never_imports_scdlsegment(path):
    assert not _imported(path) & SEGMENT_SIDE


@pytest.mark.parametrize("path", _python_files(SHARED_LIB_DIR), ids=lambda p: p.name)
def test_shared_library_imports_neither_module_nor_qt(path):
    assert not _imported(path) & (SEGMENT_SIDE | TRAIN_SIDE | {"qt", "ctk", "PythonQt"})


@pytest.mark.parametrize("path", _python_files(SHARED_LIB_DIR), ids=lambda p: p.name)
def test_shared_library_loads_nothing_heavy_at_file_scope(path):
    allowed = set(sys.stdlib_module_names) | {"slicer", "numpy", "SCDLSlicerLib"}
    top = file_scope_imports(path)
    assert top <= allowed, f"{path.name}: {sorted(top - allowed)}"


def test_submodule_list_names_every_file():
    from SCDLSlicerLib import SUBMODULES

    assert sorted(SUBMODULES) == sorted(p.stem for p in SHARED_LIB_DIR.glob("*.py") if p.stem != "__init__")


def test_cmake_lists_equal_the_files_on_disk():
    text = (SHARED_LIB_DIR / "CMakeLists.txt").read_text(encoding="utf-8")

    def listed(variable):
        match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
        assert match, variable
        return {line.strip() for line in match.group(1).splitlines() if line.strip()}

    files = {p.relative_to(REPO).as_posix() for p in SHARED_LIB_DIR.rglob("*") if p.is_file()
             and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert listed("SCDL_SLICER_LIB_PYTHON_SCRIPTS") == {f for f in files if f.endswith(".py")}
    assert listed("SCDL_SLICER_LIB_RESOURCES") == {f for f in files if not f.endswith(".py")}
    assert "NO_INSTALL_SUBDIR" in text and "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert top.index("add_subdirectory(SCDLSlicerLib)") < top.index("add_subdirectory(SCDLSegment)")


def _function_body(path, name) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.dump(ast.Module(function.body[1:], []))  # without the docstring


def test_the_only_sys_path_edit_is_the_developer_checkout_lookup():
    segment, train = MODULE_DIR / "SCDLSegmentLib" / "__init__.py", TRAIN_DIR / "SCDLTrainLib" / "__init__.py"
    assert _function_body(segment, "_find_shared_library") == _function_body(train, "_find_shared_library")
    editing = []
    for folder in (MODULE_DIR, TRAIN_DIR, SHARED_LIB_DIR):
        for path in _python_files(folder):
            if re.search(r"sys\.path\.(append|insert)|sys\.path\[", path.read_text(encoding="utf-8")):
                editing.append(path.relative_to(REPO).as_posix())
    assert editing == ["SCDLSegment/SCDLSegmentLib/__init__.py", "SCDLTrain/SCDLTrainLib/__init__.py"]


def test_model_hand_off_names_scdlsegments_parameter_node():
    """SCDLTrain selects its model in SCDL Segment through ``SCDLSlicerLib.models.select_for_segmentation``
    (no import of the module): the names it writes are SCDLSegment's."""
    import SCDLSegment
    from SCDLSlicerLib import models

    assert models.SEGMENT_MODULE_NAME == SCDLSegment.SCDLSegmentLogic.__name__[: -len("Logic")]
    assert models.SEGMENT_MODEL_PARAMETER in SCDLSegment.SCDLSegmentParameterNode.allParameters


def test_select_for_segmentation_reaches_scdlsegments_parameter_node(slicer_app):
    import SCDLSegment
    from SCDLSlicerLib import models

    models.select_for_segmentation("some-model")                       # before the module was ever opened
    assert SCDLSegment.SCDLSegmentLogic().getParameterNode().modelId == "some-model"
    models.select_for_segmentation("another-model")                    # and once its node exists
    assert SCDLSegment.SCDLSegmentLogic().getParameterNode().modelId == "another-model"
    assert slicer_app.scene.GetNodesByClass("vtkMRMLScriptedModuleNode").GetNumberOfItems() == 1


def _cmake_entries(path, variable, replace=()):
    match = re.search(rf"set\({variable}\s+(.*?)\)", path.read_text(encoding="utf-8"), re.S)
    entries = [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]
    for old, new in replace:
        entries = [e.replace(old, new) for e in entries]
    return entries


def test_installed_layout_imports_without_the_checkout(tmp_path):
    """The files the CMake lists install, laid out as in ``qt-scripted-modules/``: both modules import, find
    ``SCDLSlicerLib``, its requirements and ``scdl`` there, and nothing appends the checkout to sys.path."""
    import shutil
    import subprocess

    from harness import STUBS

    target = tmp_path / "qt-scripted-modules"
    files = []
    for module in ("SCDLSegment", "SCDLTrain"):
        cmake = REPO / module / "CMakeLists.txt"
        for variable in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
            for entry in _cmake_entries(cmake, variable, (("${MODULE_NAME}", module),)):
                # slicerMacroBuildScriptedModule keeps the relative paths (both modules share Resources/)
                files.append((REPO / module / entry, entry))
    for variable in ("SCDL_SLICER_LIB_PYTHON_SCRIPTS", "SCDL_SLICER_LIB_RESOURCES"):
        files += [(REPO / e, e) for e in _cmake_entries(SHARED_LIB_DIR / "CMakeLists.txt", variable)]
    for variable in ("SCDL_CORE_PYTHON_SCRIPTS", "SCDL_SHARED_RESOURCES"):
        files += [(REPO / e, e) for e in _cmake_entries(REPO / "CMake" / "SCDLCore.cmake", variable)]
    for source, destination in files:
        (target / destination).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target / destination)
    code = (
        "import sys; sys.path[:0] = [%r, %r]; before = list(sys.path)\n"
        "import SCDLSegment, SCDLTrain, SCDLSlicerLib, scdl\n"
        "from SCDLSlicerLib import dependencies\n"
        "print(SCDLSlicerLib.__file__); print(scdl.__file__); print(dependencies.REQUIREMENTS_FILE.is_file())\n"
        "print(sys.path == before)\n"
    ) % (str(STUBS), str(target))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-4:] == [
        str(target / "SCDLSlicerLib" / "__init__.py"), str(target / "scdl" / "__init__.py"), "True", "True"]
