"""Harness for the Slicer-side tests: real MRML from the ``slicer-core`` wheel, no GUI.

What is real: the MRML scene, ``vtkSlicerApplicationLogic`` with the colour, volumes, segmentations,
subject-hierarchy and terminologies logics (terminology contexts from ``data/terminologies``), storage
nodes and file readers/writers, ``slicer.util`` (array helpers, ``launchConsoleProcess``, ...).

What is a stand-in (``stubs/``): ``slicer.ScriptedLoadableModule``, ``slicer.i18n`` and
``slicer.parameterNodeWrapper`` (a ``slicer/`` folder WITHOUT ``__init__.py``, merged into the real
``slicer`` package), and small fake ``qt``/``ctk`` modules so that module files import. ``slicer.app`` is
never provided: code that needs the application must fail here rather than "succeed" against a mock.

Fixtures: ``slicer_app`` (scene + logics, sets ``slicer.mrmlScene`` and ``slicer.modules``), ``patient_a_volume``
(the real patient A CT loaded into the scene), ``scdl_home`` (an isolated model cache), ``fake_qt``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STUBS = HERE / "stubs"
MODULE_DIR = REPO / "SCDLSegment"
TERMINOLOGY_DIR = HERE / "data" / "terminologies"

for _path in (str(STUBS), str(MODULE_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import slicer  # noqa: E402  (after the stubs are on sys.path)

# If another test imported ``slicer`` before the stubs were on sys.path, merge the stub folder now.
if str(STUBS / "slicer") not in list(slicer.__path__):
    slicer.__path__.append(str(STUBS / "slicer"))
for _name in ("ScriptedLoadableModule", "i18n", "parameterNodeWrapper"):
    importlib.import_module(f"slicer.{_name}")

import vtk  # noqa: E402

assert not hasattr(slicer, "app"), "slicer.app must not exist in these tests (never mock the application)"


class _ModuleHandle:
    """What ``slicer.modules.<name>`` offers in Slicer: ``logic()`` (and ``path`` for scripted modules)."""

    def __init__(self, logic=None, path: str = ""):
        self._logic = logic
        self.path = path

    def logic(self):
        return self._logic


class SlicerHarness:
    """A scene with an application logic and the module logics registered as in the Slicer application."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        # No Slicer installation here: an empty home means "no default colour files" instead of an error.
        self.home = tempfile.mkdtemp(prefix="scdl-slicer-home-")
        os.makedirs(os.path.join(self.home, "share", "ColorFiles"))
        self.app_logic.SetHomeDirectory(self.home)
        self.app_logic.SetShareDirectory("share")
        self.app_logic.SetTemporaryPath(self.home)
        self.app_logic.SetMRMLScene(self.scene)
        self.colors = self._register(slicer.vtkSlicerColorLogic(), "Colors")
        self.app_logic.SetColorLogic(self.colors)
        self.volumes = self._register(slicer.vtkSlicerVolumesLogic(), "Volumes")
        self.terminologies = self._register(slicer.vtkSlicerTerminologiesModuleLogic(), "Terminologies",
                                            share=TERMINOLOGY_DIR)
        self.segmentations = self._register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
        self.subject_hierarchy = self._register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy")
        self._add_views()

    def _register(self, logic, name: str, share: Path | None = None):
        if share is not None:
            logic.SetModuleShareDirectory(str(share))
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic(name, logic)
        return logic

    def _add_views(self) -> None:
        """Slice composite nodes of the Red/Yellow/Green views (what the application's layout creates)."""
        for name in ("Red", "Yellow", "Green"):
            composite = slicer.vtkMRMLSliceCompositeNode()
            composite.SetLayoutName(name)
            self.scene.AddNode(composite)

    def modules(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            colors=_ModuleHandle(self.colors),
            volumes=_ModuleHandle(self.volumes),
            terminologies=_ModuleHandle(self.terminologies),
            segmentations=_ModuleHandle(self.segmentations),
            subjecthierarchy=_ModuleHandle(self.subject_hierarchy),
            scdlsegment=_ModuleHandle(None, str(MODULE_DIR / "SCDLSegment.py")),
        )

    def loaded_terminology_names(self) -> list[str]:
        names = vtk.vtkStringArray()
        self.terminologies.GetLoadedTerminologyNames(names)
        return [names.GetValue(i) for i in range(names.GetNumberOfValues())]

    def close(self) -> None:
        self.scene.Clear(1)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def slicer_app():
    """A fresh scene + logics; ``slicer.mrmlScene`` and ``slicer.modules`` point at them during the test."""
    harness = SlicerHarness()
    slicer.mrmlScene = harness.scene
    slicer.modules = harness.modules()
    try:
        yield harness
    finally:
        harness.close()
        for attr in ("mrmlScene", "modules"):
            if hasattr(slicer, attr):
                delattr(slicer, attr)


@pytest.fixture
def patient_a_volume(slicer_app, patient_a_ct):
    """Patient A's CT (122x101x112, 3 mm) read by Slicer's own volume reader into the scene."""
    node = slicer_app.volumes.AddArchetypeVolume(str(patient_a_ct), "patientA", 0)
    assert node is not None, f"Slicer could not read {patient_a_ct}"
    return node


@pytest.fixture
def scdl_home(tmp_path, monkeypatch):
    """An isolated SCDL home / model cache for the test (nothing of the user's ~/.scdl is touched)."""
    home = tmp_path / "scdl_home"
    home.mkdir()
    monkeypatch.setenv("SCDL_HOME", str(home))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)
    return home


@pytest.fixture
def fake_qt():
    """The fake ``qt`` module (``stubs/qt.py``), reset before and after the test."""
    import qt

    qt.reset()
    yield qt
    qt.reset()
