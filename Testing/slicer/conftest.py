"""Fixtures of the Slicer-side tests: real MRML from the ``slicer-core`` wheel, no GUI.

What is real: the MRML scene, ``vtkSlicerApplicationLogic`` with the colour, volumes, segmentations,
subject-hierarchy and terminologies logics (terminology contexts from ``data/terminologies``), storage
nodes and file readers/writers, ``slicer.util`` (array helpers, ``launchConsoleProcess``, ...), and the
``scdl`` child processes.

What is a stand-in (``stubs/``): ``slicer.ScriptedLoadableModule``, ``slicer.i18n`` and
``slicer.parameterNodeWrapper`` (a ``slicer/`` folder WITHOUT ``__init__.py``, merged into the real
``slicer`` package), and small fake ``qt``/``ctk`` modules so that module files import. ``slicer.app`` is
never provided: code that needs the application must fail here rather than "succeed" against a mock.
The harness itself lives in ``harness.py``.
"""

from __future__ import annotations

import pytest

from harness import installed_harness


@pytest.fixture
def slicer_app():
    """A fresh scene + logics; ``slicer.mrmlScene`` and ``slicer.modules`` point at them during the test."""
    with installed_harness() as harness:
        yield harness


@pytest.fixture(scope="module")
def slicer_app_module():
    """Like ``slicer_app``, shared by the tests of one module (for one expensive end-to-end run)."""
    with installed_harness() as harness:
        yield harness


@pytest.fixture
def patient_a_volume(slicer_app, patient_a_ct):
    """Patient A's CT (122x101x112, 3 mm) read by Slicer's own volume reader into the scene."""
    node = slicer_app.volumes.AddArchetypeVolume(str(patient_a_ct), "patientA", 0)
    assert node is not None, f"Slicer could not read {patient_a_ct}"
    return node


@pytest.fixture
def scdl_home(tmp_path, monkeypatch, resources_without_default_model):
    """An isolated SCDL home / model cache for the test (nothing of the user's ~/.scdl is touched), with a
    Resources folder WITHOUT the bundled default model: the widget tests start from "nothing installed"."""
    home = tmp_path / "scdl_home"
    home.mkdir()
    monkeypatch.setenv("SCDL_HOME", str(home))
    monkeypatch.setenv("SCDL_RESOURCES", str(resources_without_default_model))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)
    return home


@pytest.fixture(scope="session")
def coarse_model(tmp_path_factory):
    """A random-weight package at 12 mm: patient A fits in one 32^3 window (fast end-to-end runs)."""
    from model_factory import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("coarse_model") / "coarse-test-model", spacing=(12.0, 12.0, 12.0),
                             model_id="coarse-test-model")


@pytest.fixture
def dialogs(monkeypatch):
    """``slicer.util.errorDisplay`` / ``confirmOkCancelDisplay`` (they need the application) recorded instead
    (``widgettools.Dialogs``); set ``dialogs.confirm`` to answer confirmations."""
    import slicer

    from widgettools import Dialogs

    recorder = Dialogs()
    monkeypatch.setattr(slicer.util, "errorDisplay", recorder.error)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", recorder.ask)
    return recorder


@pytest.fixture
def fake_qt():
    """The fake ``qt`` module (``stubs/qt.py``), reset before and after the test."""
    import qt

    qt.reset()
    yield qt
    qt.reset()


# -- SCDLTrain ------------------------------------------------------------------------------------------
#: Blocks cut out of patient A for the SCDLTrain tests: (name, start index (x, y, z) in the 3 mm CT, labeled).
#: 80x64x48 voxels each, downsampled 2x to 40x32x24 voxels of 6 mm; the organs of the upper abdomen are inside.
TRAIN_BLOCKS = (("blockA", (8, 16, 60), True), ("blockB", (30, 28, 64), True), ("blockC", (20, 20, 56), False))
TRAIN_BLOCK_SIZE = (80, 64, 48)


@pytest.fixture(scope="session")
def train_blocks(tmp_path_factory, patient_a_ct, patient_a_seg):
    """Patient A cut into three small 6 mm blocks: ``{name: (ct.nrrd, labels.nrrd or None)}``.

    The CT is averaged 2x2x2 (``BinShrink``); the TotalSegmentator label map is resampled onto the shrunk
    grid (nearest neighbour), so each label map lies exactly on its CT's grid.
    """
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("train_blocks")
    ct, seg = sitk.ReadImage(str(patient_a_ct)), sitk.ReadImage(str(patient_a_seg))
    out = {}
    for name, start, labeled in TRAIN_BLOCKS:
        image = sitk.BinShrink(sitk.RegionOfInterest(ct, TRAIN_BLOCK_SIZE, start), [2, 2, 2])
        sitk.WriteImage(image, str(folder / f"{name}.nrrd"))
        label_path = None
        if labeled:
            label = sitk.Resample(sitk.RegionOfInterest(seg, TRAIN_BLOCK_SIZE, start), image, sitk.Transform(),
                                  sitk.sitkNearestNeighbor, 0, seg.GetPixelID())
            label_path = folder / f"{name}_labels.nrrd"
            sitk.WriteImage(label, str(label_path))
        out[name] = (folder / f"{name}.nrrd", label_path)
    return out


def load_train_block(harness, ct_path, label_path=None, name=None):
    """A block into the scene: the CT volume and (if labeled) a segmentation that refers to it, whose segments
    carry the TotalSegmentator names of their label values (e.g. 5 -> "liver", 2 -> "kidney_right")."""
    from scdl.labels.table import LabelTable
    from SCDLSlicerLib import sceneio

    name = name or ct_path.stem
    volume = harness.volumes.AddArchetypeVolume(str(ct_path), name, 0)
    if label_path is None:
        return volume, None
    labelmap = harness.volumes.AddArchetypeVolume(str(label_path), f"{name} labels", 1)
    segmentation = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    harness.segmentations.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    sceneio.remove_node(labelmap)
    table = LabelTable.load("totalsegmentator_v2")
    content = segmentation.GetSegmentation()
    for index in range(content.GetNumberOfSegments()):
        segment = content.GetNthSegment(index)
        segment.SetName(table.by_value(segment.GetLabelValue()).name)
    return volume, segmentation


@pytest.fixture
def train_scene(slicer_app, train_blocks):
    """A scene with two labeled blocks of patient A (TotalSegmentator segmentations) and one unlabeled block."""
    return {name: load_train_block(slicer_app, *train_blocks[name], name=name) for name, _start, _lab in TRAIN_BLOCKS}


@pytest.fixture(scope="session")
def train_block_loader():
    """``load_train_block(harness, ct_path, label_path, name)`` for tests that build their own scene."""
    return load_train_block
