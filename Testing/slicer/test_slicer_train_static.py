"""SCDLTrain tier 4: static checks of what only Slicer would otherwise catch (UI names, CMake lists, imports),
and tier 2: the module's own self-test (``SCDLTrainTest.runTest``, as Reload & Test runs it) under pytest."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fakeui import ui_custom_widgets, ui_widgets
from harness import REPO, STUBS
from statictools import (
    PANEL_FILE, check_descriptor, cmake_list, file_scope_imports, files_on_disk, heavy_modules_after_import, imports,
    names_in_class, png_size, ui_names_used,
)

MODULE_DIR = REPO / "SCDLTrain"
MODULE_FILE = MODULE_DIR / "SCDLTrain.py"
LIB_DIR = MODULE_DIR / "SCDLTrainLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SCDLTrain.ui"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"


def test_every_ui_name_used_in_the_code_exists_in_the_ui_file():
    import SCDLTrain

    used = ui_names_used(MODULE_FILE, PANEL_FILE, LIB_DIR / "handlers.py") | set(SCDLTrain.SCDLTrainWidget.HAND_BOUND)
    widgets = ui_widgets(UI_FILE)
    assert len(used) > 30, "no ui names found"
    assert used <= set(widgets), f"not in {UI_FILE.name}: {sorted(used - set(widgets))}"


def test_custom_widgets_are_declared():
    classes = set(ui_widgets(UI_FILE).values())
    assert {c for c in classes if not c.startswith("Q")} == ui_custom_widgets(UI_FILE)


def test_cmake_lists_equal_the_files_on_disk():
    scripts, resources = files_on_disk(MODULE_DIR)
    assert cmake_list(CMAKE_FILE, "MODULE_PYTHON_SCRIPTS", "SCDLTrain") == scripts
    assert cmake_list(CMAKE_FILE, "MODULE_PYTHON_RESOURCES", "SCDLTrain") == resources
    text = CMAKE_FILE.read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    # the requirements are the shared library's (SCDLSlicerLib/requirements.txt), not a module's
    assert not (MODULE_DIR / "Resources" / "requirements.txt").exists()
    assert "add_subdirectory(SCDLTrain)" in (REPO / "CMakeLists.txt").read_text(encoding="utf-8")


def test_submodule_list_names_every_helper():
    from SCDLTrainLib import SUBMODULES

    assert sorted(SUBMODULES) == sorted(p.stem for p in LIB_DIR.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")) + [MODULE_FILE], ids=lambda p: p.name)
def test_no_heavy_or_gui_imports_at_file_scope(path):
    top = file_scope_imports(path)
    allowed = set(sys.stdlib_module_names) | {"slicer", "numpy", "vtk", "SCDLSlicerLib", "SCDLTrainLib"}
    if path == MODULE_FILE:
        allowed |= {"qt"}  # the widget is Qt glue
    assert top <= allowed, f"{path.name}: {sorted(top - allowed)}"


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_helper_package_never_uses_qt(path):
    assert not {"qt", "ctk", "PythonQt"} & set(imports(ast.parse(path.read_text(encoding="utf-8")))), path.name


def test_logic_lives_in_the_lib_and_the_module_file_stays_thin():
    assert not {"qt", "ctk"} & names_in_class(LIB_DIR / "logic.py", "SCDLTrainLogic")
    import SCDLTrain
    from SCDLTrainLib import logic

    assert SCDLTrain.SCDLTrainLogic is logic.SCDLTrainLogic and SCDLTrain.SCDLTrainTest.__module__ == "SCDLTrainLib.selftest"
    assert len(MODULE_FILE.read_text(encoding="utf-8").splitlines()) <= 300  # descriptor, widget wiring, self-test entry


def test_importing_the_module_loads_nothing_heavy():
    assert heavy_modules_after_import("SCDLTrain", [Path(__file__).parent, STUBS, MODULE_DIR]) == []


def test_developer_checkout_finds_the_shared_library_without_scdlsegment(tmp_path):
    """Only SCDLTrain/ on the path (one module folder added in Slicer's settings; the stubs stand in for
    Slicer): SCDLTrain imports, ``SCDLSlicerLib`` comes from the checkout root, and neither the SCDLSegment module
    nor its ``SCDLSegmentLib`` is loaded."""
    code = (
        "import importlib.util, sys; sys.path[:0] = [%r, %r]\n"
        "assert importlib.util.find_spec('SCDLSlicerLib') is None\n"
        "import SCDLTrain, SCDLSlicerLib; print(SCDLSlicerLib.__file__)\n"
        "print(sorted(m for m in sys.modules if m.startswith('SCDLSegment')))\n"
    ) % (str(STUBS), str(MODULE_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-2:] == [str(REPO / "SCDLSlicerLib" / "__init__.py"), "[]"]


def test_module_descriptor_cites_the_paper_and_uses_tr():
    import SCDLTrain

    check_descriptor(SCDLTrain.SCDLTrain, MODULE_FILE, "SCDL Train")


def test_icon_is_a_128_pixel_png():
    assert png_size(MODULE_DIR / "Resources" / "Icons" / "SCDLTrain.png") == (128, 128)


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


def test_parameter_names_in_the_ui_are_parameters_with_the_ui_ranges():
    """The .ui binds the spin boxes, the CPU-preset check box and the run name by ``SlicerParameterName``; Slicer's
    wrapper then sets each spin box's range from the parameter's ``WithinRange``: it must be the .ui's."""
    import typing
    import xml.etree.ElementTree as ET

    import SCDLTrain
    from fakeui import ui_parameter_names

    bound = ui_parameter_names(UI_FILE)
    assert set(bound.values()) == {"valFraction", "scdlWeight", "iterations", "patchSize", "labeledBatch",
                                   "unlabeledBatch", "cpuPreset", "runName"}
    hints = typing.get_type_hints(SCDLTrain.SCDLTrainParameterNode, include_extras=True)
    root = ET.parse(UI_FILE).getroot()
    for widget in root.iter("widget"):
        name = bound.get(widget.get("name"))
        if name is None or widget.get("class") not in ("QSpinBox", "QDoubleSpinBox"):
            continue
        props = {p.get("name"): float(p[0].text) for p in widget.findall("property") if p.get("name") in ("minimum", "maximum")}
        limits = [a for a in getattr(hints[name], "__metadata__", ()) if type(a).__name__ == "WithinRange"]
        assert limits and (limits[0].minimum, limits[0].maximum) == (props["minimum"], props["maximum"]), name


def test_the_panels_defaults_are_read_from_the_core(slicer_app, tmp_path, monkeypatch):
    """Framework, SCDL weight, iterations, patch, batches and preset: the panel's defaults and ``TrainOptions``' are the core
    configuration's, read when a node or options are made (a patched core value appears); a scene's saved value
    is kept, and a node that lacks some (an older scene) gets the core's for those only."""
    from scdl.method.config import SCDLConfig
    from scdl.training import config

    import SCDLTrain
    from SCDLTrainLib import options

    monkeypatch.setattr(SCDLConfig, "lam", 0.25)
    monkeypatch.setattr(config, "DEFAULT_FRAMEWORK", config.Framework.CPS)
    monkeypatch.setattr(config, "DEFAULT_PRESET", config.Preset.CPU)
    for key, value in {"iterations": 1234, "patch_size": [64, 64, 64], "labeled_batch": 3, "unlabeled_batch": 5}.items():
        monkeypatch.setitem(config.DEFAULTS, key, value)
    node = SCDLTrain.SCDLTrainLogic().getParameterNode()
    assert node.scdlWeight == 0.25 and options.TrainOptions(run_dir=tmp_path, cohort={}).scdl_weight == 0.25
    assert (node.framework, node.iterations, node.patchSize, node.labeledBatch, node.unlabeledBatch, node.cpuPreset) == (
        "cps", 1234, 64, 3, 5, True)
    opts = options.TrainOptions(run_dir=tmp_path, cohort={})
    assert (opts.framework, opts.iterations, opts.patch_size, opts.labeled_batch, opts.unlabeled_batch, opts.preset) == (
        "cps", 1234, 64, 3, 5, "cpu")
    node.iterations, node.framework = 77, "supervised"                  # the scene's values
    node.parameterNode.UnsetParameter("labeledBatch")                   # an older scene without this one
    monkeypatch.setitem(config.DEFAULTS, "labeled_batch", 4)
    again = SCDLTrain.SCDLTrainLogic().getParameterNode()
    assert (again.iterations, again.framework, again.patchSize, again.labeledBatch) == (77, "supervised", 64, 4)