"""SCDLTrain tier 4: static checks of what only Slicer would otherwise catch (UI names, CMake lists, imports),
and tier 2: the module's own self-test (``SCDLTrainTest.runTest``, as Reload & Test runs it) under pytest."""

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fakeui import ui_custom_widgets, ui_widgets
from harness import MODULE_DIR as SEGMENT_DIR
from harness import REPO, STUBS

MODULE_DIR = REPO / "SCDLTrain"
MODULE_FILE = MODULE_DIR / "SCDLTrain.py"
LIB_DIR = MODULE_DIR / "SCDLTrainLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SCDLTrain.ui"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"


def _cmake_list(variable: str) -> set:
    match = re.search(rf"set\({variable}\s+(.*?)\)", CMAKE_FILE.read_text(), re.S)
    assert match, variable
    return {line.strip().replace("${MODULE_NAME}", "SCDLTrain") for line in match.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")}


def test_every_ui_name_used_in_the_code_exists_in_the_ui_file():
    used = set(re.findall(r"\bui\.([A-Za-z_]\w*)", MODULE_FILE.read_text()))
    widgets = ui_widgets(UI_FILE)
    assert len(used) > 40, "no ui names found"
    assert used <= set(widgets), f"not in {UI_FILE.name}: {sorted(used - set(widgets))}"


def test_custom_widgets_are_declared():
    classes = set(ui_widgets(UI_FILE).values())
    assert {c for c in classes if not c.startswith("Q")} == ui_custom_widgets(UI_FILE)


def test_cmake_lists_equal_the_files_on_disk():
    scripts = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    resources = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert _cmake_list("MODULE_PYTHON_SCRIPTS") == scripts
    assert _cmake_list("MODULE_PYTHON_RESOURCES") == resources
    text = CMAKE_FILE.read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    # both modules install into qt-scripted-modules/Resources: SCDLTrain reuses SCDLSegment's requirements
    assert not (MODULE_DIR / "Resources" / "requirements.txt").exists()
    assert "add_subdirectory(SCDLTrain)" in (REPO / "CMakeLists.txt").read_text()


def test_submodule_list_names_every_helper():
    from SCDLTrainLib import SUBMODULES

    assert sorted(SUBMODULES) == sorted(p.stem for p in LIB_DIR.glob("*.py") if p.stem != "__init__")


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")) + [MODULE_FILE], ids=lambda p: p.name)
def test_no_heavy_or_gui_imports_at_file_scope(path):
    tree = ast.parse(path.read_text())
    top = {n for stmt in tree.body if isinstance(stmt, (ast.Import, ast.ImportFrom)) for n in _imports(ast.Module([stmt], []))}
    allowed = set(sys.stdlib_module_names) | {"slicer", "numpy", "vtk", "SCDLSegmentLib", "SCDLTrainLib"}
    if path == MODULE_FILE:
        allowed |= {"qt"}  # the widget is Qt glue
    assert top <= allowed, f"{path.name}: {sorted(top - allowed)}"


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_helper_package_never_uses_qt(path):
    assert not {"qt", "ctk", "PythonQt"} & set(_imports(ast.parse(path.read_text()))), path.name


def test_logic_class_has_no_qt():
    tree = ast.parse(MODULE_FILE.read_text())
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SCDLTrainLogic")
    assert not {"qt", "ctk"} & {n.id for n in ast.walk(logic) if isinstance(n, ast.Name)}


def test_importing_the_module_loads_nothing_heavy():
    code = (
        "import sys; sys.path[:0] = [%r, %r, %r, %r]\n"
        "import harness, SCDLTrain\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'SimpleITK', 'monai', 'scdl', 'safetensors', 'slicerio'})\n"
        "print(heavy)\n"
    ) % (str(Path(__file__).parent), str(STUBS), str(SEGMENT_DIR), str(MODULE_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_developer_checkout_finds_scdlsegmentlib_beside_the_module():
    """Only SCDLTrain/ on the path (one module folder added in Slicer's settings): SCDLSegmentLib is found in
    the sibling SCDLSegment/ folder."""
    code = (
        "import sys; sys.path[:0] = [%r, %r, %r]\n"
        "import harness; sys.path.remove(%r)\n"
        "import SCDLTrain, SCDLSegmentLib; print(SCDLSegmentLib.__file__)\n"
    ) % (str(Path(__file__).parent), str(STUBS), str(MODULE_DIR), str(SEGMENT_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(SEGMENT_DIR / "SCDLSegmentLib" / "__init__.py")


def test_module_descriptor_cites_the_paper_and_uses_tr():
    import SCDLTrain

    parent = types.SimpleNamespace(path=str(MODULE_FILE))
    SCDLTrain.SCDLTrain(parent)
    assert parent.title == "SCDL Train" and parent.categories == ["Segmentation"]
    assert "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image Segmentation" in parent.helpText
    assert "arXiv 2603.05202" in parent.helpText and "Su et al." in parent.acknowledgementText
    source = MODULE_FILE.read_text()
    for attribute in ("title", "helpText", "acknowledgementText"):
        assert re.search(rf"self\.parent\.{attribute} = _\(", source), attribute


def test_icon_is_a_128_pixel_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "SCDLTrain.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (128, 128)


def test_parameter_node_holds_the_panel_state():
    import SCDLTrain

    assert set(SCDLTrain.SCDLTrainParameterNode.allParameters) == {
        "cohortSource", "labeledFolder", "unlabeledFolder", "valFolder", "sourceLabels", "manifestPath",
        "valFraction", "segmentMapping", "initModel", "framework", "scdlWeight", "iterations", "patchSize",
        "labeledBatch", "unlabeledBatch", "device", "cpuPreset", "advanced", "runsFolder", "runName", "runFolder",
        "trainedModelId"}


def test_module_self_test_runs_unchanged(slicer_app, scdl_home):
    import SCDLTrain

    SCDLTrain.SCDLTrainTest().runTest()
