"""Tier 4: static checks of what only Slicer would otherwise catch (UI names, CMake lists, imports)."""

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fakeui import ui_custom_widgets, ui_widgets
from harness import MODULE_DIR, REPO, STUBS

MODULE_FILE = MODULE_DIR / "SCDLSegment.py"
LIB_DIR = MODULE_DIR / "SCDLSegmentLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SCDLSegment.ui"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"


def _cmake_list(variable: str) -> set:
    text = CMAKE_FILE.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, variable
    return {line.strip().replace("${MODULE_NAME}", "SCDLSegment") for line in match.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")}


def test_every_ui_name_used_in_the_code_exists_in_the_ui_file():
    used = set(re.findall(r"\bui\.([A-Za-z_]\w*)", MODULE_FILE.read_text()))
    widgets = ui_widgets(UI_FILE)
    assert used, "no ui names found"
    assert used <= set(widgets), f"not in {UI_FILE.name}: {sorted(used - set(widgets))}"


def test_custom_widgets_are_declared_and_used():
    classes = set(ui_widgets(UI_FILE).values())
    custom = {c for c in classes if not c.startswith("Q")}
    assert custom == ui_custom_widgets(UI_FILE)


def test_parameter_names_in_the_ui_match_the_parameter_node():
    import SCDLSegment

    text = UI_FILE.read_text()
    bound = set(re.findall(r'<property name="SlicerParameterName" stdset="0">\s*<string>(\w+)</string>', text))
    assert bound == {"inputVolume", "outputSegmentation", "computeUncertainty"}
    assert bound <= set(SCDLSegment.SCDLSegmentParameterNode.allParameters)


def test_cmake_lists_equal_the_files_on_disk():
    scripts = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    resources = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert _cmake_list("MODULE_PYTHON_SCRIPTS") == scripts
    assert _cmake_list("MODULE_PYTHON_RESOURCES") == resources
    text = CMAKE_FILE.read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_requirements_follow_pyproject_minus_what_slicer_provides():
    from SCDLSegmentLib import dependencies as deps

    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    core = {deps.canonical(deps.requirement_name(r)): r for r in re.findall(r'"([^"]+)"', block)}
    skipped = {deps.canonical(n) for n in deps.SKIP_PACKAGES}
    wanted = {name: req for name, req in core.items() if name not in skipped}
    listed = {deps.canonical(deps.requirement_name(r)): r for r in deps.read_requirements()}
    assert listed == wanted
    assert deps.TORCH_REQUIREMENT in core["torch"]


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
    for stmt in tree.body:  # try/except ImportError blocks at file scope count too
        if isinstance(stmt, ast.Try):
            top |= set(_imports(ast.Module(stmt.body, [])))
    allowed = set(sys.stdlib_module_names) | {"slicer", "numpy", "SCDLSegmentLib"}
    if path == MODULE_FILE:
        allowed |= {"qt", "vtk"}  # the widget is Qt glue; PythonQt and VTK are always there in Slicer
    assert top <= allowed, f"{path.name}: {sorted(top - allowed)}"


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_helper_package_never_uses_qt(path):
    assert not {"qt", "ctk", "PythonQt"} & set(_imports(ast.parse(path.read_text()))), path.name


def test_logic_class_has_no_qt():
    tree = ast.parse(MODULE_FILE.read_text())
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SCDLSegmentLogic")
    names = {n.id for n in ast.walk(logic) if isinstance(n, ast.Name)}
    assert not {"qt", "ctk"} & names
    helpers = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert not any({"qt", "ctk"} & {m.id for m in ast.walk(f) if isinstance(m, ast.Name)} for f in helpers)


def test_importing_the_module_loads_nothing_heavy():
    code = (
        "import sys; sys.path[:0] = [%r, %r, %r]\n"
        "import harness, SCDLSegment\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'SimpleITK', 'monai', 'scdl', 'safetensors', 'slicerio'})\n"
        "print(heavy)\n"
    ) % (str(Path(__file__).parent), str(STUBS), str(MODULE_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_module_descriptor_cites_the_paper_and_uses_tr():
    import SCDLSegment

    parent = types.SimpleNamespace(path=str(MODULE_FILE))
    SCDLSegment.SCDLSegment(parent)
    assert parent.title == "SCDL Segment" and parent.categories == ["Segmentation"]
    assert "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image Segmentation" in parent.helpText
    assert "arXiv 2603.05202" in parent.helpText and "Su et al." in parent.acknowledgementText
    source = MODULE_FILE.read_text()
    for attribute in ("title", "helpText", "acknowledgementText"):
        assert re.search(rf"self\.parent\.{attribute} = _\(", source), attribute


def test_icon_is_a_128_pixel_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "SCDLSegment.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (128, 128)


def test_developer_checkout_finds_the_core_package_beside_the_module(tmp_path):
    """Without ``pip install -e`` (site-packages off: ``python -S``) the Logic makes ``import scdl`` work."""
    code = (
        "import importlib.util, sys; sys.path.insert(0, %r)\n"
        "from SCDLSegmentLib import commands\n"
        "print(importlib.util.find_spec('scdl') is None, commands.ensure_core_importable())\n"
        "print(commands.scdl_package_parent())\n"
    ) % str(MODULE_DIR)
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["True True", str(REPO)]
