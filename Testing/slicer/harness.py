"""The Slicer test harness: a real MRML scene with the application logic and module logics registered as
in the Slicer application (from the slicer-core wheel), plus the test-only stubs (see conftest.py)."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STUBS = HERE / "stubs"
MODULE_DIR = REPO / "SCDLSegment"
TRAIN_DIR = REPO / "SCDLTrain"
SHARED_LIB_DIR = REPO / "SCDLSlicerLib"
TERMINOLOGY_DIR = HERE / "data" / "terminologies"

# The one place where the tests set sys.path, as Slicer would: the stubs first, then the two module folders
# (Slicer puts each module's folder on sys.path), then the folder holding ``SCDLSlicerLib`` and ``scdl`` (the
# installed extension's qt-scripted-modules/; here the checkout root).
for _path in (str(REPO), str(TRAIN_DIR), str(MODULE_DIR), str(STUBS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)



def _is_this_folder(entry: str) -> bool:
    return os.path.realpath(os.path.join(entry or os.getcwd(), "slicer")) == str(HERE)


def _import_slicer():
    """Import the real ``slicer`` package with the stubs merged in, but NOT this test folder.

    slicer-core's ``slicer/__init__.py`` extends its ``__path__`` with every ``slicer/`` folder found on
    sys.path and imports every module there. pytest puts ``Testing/`` on sys.path, so this very folder
    (``Testing/slicer``) would be merged and its conftest and test files imported as ``slicer.*``. The
    import therefore runs with ``Testing/`` hidden from sys.path.
    """
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if not _is_this_folder(entry)]
    try:
        import slicer
    finally:
        sys.path[:] = saved
    slicer.__path__[:] = [p for p in slicer.__path__ if os.path.realpath(p) != str(HERE)]
    # If something imported ``slicer`` before the stubs were on sys.path, merge the stub folder now.
    if str(STUBS / "slicer") not in list(slicer.__path__):
        slicer.__path__.append(str(STUBS / "slicer"))
    return slicer


slicer = _import_slicer()
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
            composite.SetSingletonTag(name)
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


@contextlib.contextmanager
def installed_harness():
    """A fresh :class:`SlicerHarness`; ``slicer.mrmlScene`` and ``slicer.modules`` point at it meanwhile."""
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


def ijk_to_ras(node):
    """IJK->RAS matrix of a volume node as a 4x4 numpy array."""
    import numpy as np

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
