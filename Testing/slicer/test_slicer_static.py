"""Tier 4: static checks of what only Slicer would otherwise catch (UI names, CMake lists, imports)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fakeui import ui_custom_widgets, ui_widgets
from harness import MODULE_DIR, REPO, STUBS
from statictools import (
    PANEL_FILE, check_descriptor, cmake_list, file_scope_imports, files_on_disk, heavy_modules_after_import, imports,
    names_in_class, png_size, ui_names_used,
)

MODULE_FILE = MODULE_DIR / "SCDLSegment.py"
LIB_DIR = MODULE_DIR / "SCDLSegmentLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SCDLSegment.ui"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"


def test_every_ui_name_used_in_the_code_exists_in_the_ui_file():
    used = ui_names_used(MODULE_FILE, PANEL_FILE, LIB_DIR / "handlers.py")
    widgets = ui_widgets(UI_FILE)
    assert used, "no ui names found"
    assert used <= set(widgets), f"not in {UI_FILE.name}: {sorted(used - set(widgets))}"


def test_custom_widgets_are_declared_and_used():
    classes = set(ui_widgets(UI_FILE).values())
    custom = {c for c in classes if not c.startswith("Q")}
    assert custom == ui_custom_widgets(UI_FILE)


def test_parameter_names_in_the_ui_match_the_parameter_node():
    import SCDLSegment

    text = UI_FILE.read_text(encoding="utf-8")
    bound = set(re.findall(r'<property name="SlicerParameterName" stdset="0">\s*<string>(\w+)</string>', text))
    assert bound == {"inputVolume", "outputSegmentation", "computeUncertainty"}
    assert bound <= set(SCDLSegment.SCDLSegmentParameterNode.allParameters)


def test_cmake_lists_equal_the_files_on_disk():
    scripts, resources = files_on_disk(MODULE_DIR)
    assert cmake_list(CMAKE_FILE, "MODULE_PYTHON_SCRIPTS", "SCDLSegment") == scripts
    assert cmake_list(CMAKE_FILE, "MODULE_PYTHON_RESOURCES", "SCDLSegment") == resources
    text = CMAKE_FILE.read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_requirements_follow_pyproject_minus_what_slicer_provides():
    from SCDLSlicerLib import dependencies as deps

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    core = {deps.canonical(deps.requirement_name(r)): r for r in re.findall(r'"([^"]+)"', block)}
    skipped = {deps.canonical(n) for n in deps.SKIP_PACKAGES}
    wanted = {name: req for name, req in core.items() if name not in skipped}
    listed = {deps.canonical(deps.requirement_name(r)): r for r in deps.read_requirements()}
    assert listed == wanted
    assert deps.TORCH_REQUIREMENT in core["torch"]


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")) + [MODULE_FILE], ids=lambda p: p.name)
def test_no_heavy_or_gui_imports_at_file_scope(path):
    top = file_scope_imports(path)  # try/except ImportError blocks at file scope count too
    allowed = set(sys.stdlib_module_names) | {"slicer", "numpy", "vtk", "SCDLSegmentLib", "SCDLSlicerLib"}
    if path == MODULE_FILE:
        allowed |= {"qt"}  # the widget is Qt glue; PythonQt and VTK are always there in Slicer
    assert top <= allowed, f"{path.name}: {sorted(top - allowed)}"


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_helper_package_never_uses_qt(path):
    assert not {"qt", "ctk", "PythonQt"} & set(imports(ast.parse(path.read_text(encoding="utf-8")))), path.name


def test_logic_lives_in_the_lib_and_the_module_file_stays_thin():
    from SCDLSegmentLib import logic

    assert not {"qt", "ctk"} & names_in_class(LIB_DIR / "logic.py", "SCDLSegmentLogic")
    import SCDLSegment

    assert SCDLSegment.SCDLSegmentLogic is logic.SCDLSegmentLogic and SCDLSegment.SCDLSegmentTest.__module__ == "SCDLSegmentLib.selftest"
    assert len(MODULE_FILE.read_text(encoding="utf-8").splitlines()) <= 300  # descriptor, widget wiring, self-test entry


def test_importing_the_module_loads_nothing_heavy():
    assert heavy_modules_after_import("SCDLSegment", [Path(__file__).parent, STUBS, MODULE_DIR]) == []


def test_module_descriptor_cites_the_paper_and_uses_tr():
    import SCDLSegment

    check_descriptor(SCDLSegment.SCDLSegment, MODULE_FILE, "SCDL Segment")


def test_icon_is_a_128_pixel_png():
    assert png_size(MODULE_DIR / "Resources" / "Icons" / "SCDLSegment.png") == (128, 128)


def test_developer_checkout_finds_the_shared_library_and_the_core_package(tmp_path):
    """Only SCDLSegment/ on the path (its folder added in Slicer's settings) and no ``pip install -e``
    (site-packages off: ``python -S``): importing the module's own package makes ``SCDLSlicerLib`` and ``scdl``
    importable from the checkout root (``SCDLSegmentLib/__init__.py``), and the child gets that folder."""
    code = (
        "import importlib.util, sys; sys.path.insert(0, %r)\n"
        "print(importlib.util.find_spec('scdl') is None, importlib.util.find_spec('SCDLSlicerLib') is None)\n"
        "import SCDLSegmentLib, SCDLSlicerLib\n"
        "from SCDLSlicerLib import commands\n"
        "print(commands.ensure_core_importable(), SCDLSlicerLib.__file__)\n"
        "print(commands.scdl_package_parent())\n"
    ) % str(MODULE_DIR)
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["True True", f"True {REPO / 'SCDLSlicerLib' / '__init__.py'}", str(REPO)]
