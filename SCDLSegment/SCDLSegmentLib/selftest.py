"""SCDLSegment's self-test (Reload and Test, the extension factory; pytest runs it unchanged).

The module file imports :class:`SCDLSegmentTest`, so Slicer finds it there.
"""

import os
import shutil
import tempfile

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from SCDLSegmentLib.logic import SCDLSegmentLogic
from SCDLSlicerLib import dependencies as deps
from SCDLSlicerLib import sceneio


#
# SCDLSegmentTest
#


class SCDLSegmentTest(ScriptedLoadableModuleTest):
    """Self-test: runs in Slicer (Reload and Test, the extension factory) and under pytest unchanged.

    The end-to-end part makes a tiny random-weight model and a synthetic CT, so it needs no download;
    it is skipped (with a message) where the Python dependencies are not installed yet.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_ProgressParsing()
        self.setUp()
        self.test_SceneRoundTrip()
        self.setUp()
        self.test_SegmentEndToEnd()

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _syntheticCt(name="SyntheticCT", shape=(40, 48, 48), spacing=(4.0, 4.0, 4.0)):
        """A CT-like volume: air -1000 HU, a body ellipsoid 40 HU, a dense 'spine' 700 HU (KJI order)."""
        import numpy as np

        k, j, i = np.indices(shape, dtype=np.float32)
        centre = [(s - 1) / 2.0 for s in shape]
        body = ((k - centre[0]) / (0.45 * shape[0])) ** 2 + ((j - centre[1]) / (0.4 * shape[1])) ** 2 + (
            (i - centre[2]) / (0.45 * shape[2])) ** 2 <= 1.0
        array = np.full(shape, -1000, dtype=np.int16)
        array[body] = 40
        array[(np.abs(j - centre[1] - 0.25 * shape[1]) < 3) & (np.abs(i - centre[2]) < 3) & body] = 700
        node = slicer.util.addVolumeFromArray(array, name=name)
        node.SetSpacing(*spacing)
        node.SetOrigin(-100.0, -120.0, 30.0)
        return node

    @staticmethod
    def _tinyModel(folder, spacing=8.0, constantLabel=6):
        """A random-weight model package (Synapse labels, VNet with 2 filters, 2 networks, one 32^3 window)
        whose output bias makes ``constantLabel`` (6 = liver) win everywhere: a known answer."""
        import torch

        from scdl.labels.table import LabelTable
        from scdl.models.card import new_card
        from scdl.models.package import save_package
        from scdl.networks.vnet import build_network

        labels = LabelTable.load("synapse")
        arch = {"name": "vnet", "in_channels": 1, "n_classes": labels.num_classes, "n_filters": 2, "norm": "batch"}
        torch.manual_seed(0)
        states = [build_network(arch).state_dict() for _index in range(2)]
        for state in states:
            state["out_conv.bias"][constantLabel] = 100.0
        card = new_card(id="scdlsegment-selftest", title="SCDLSegment self-test (random weights)", architecture=arch,
                        ensemble=2, preprocessing={"mode": "spacing", "spacing_mm": [spacing] * 3, "orientation": "LPS",
                                                   "patch_size": [32, 32, 32], "window": [-125.0, 275.0],
                                                   "scale": [0.0, 1.0]},
                        intended_use="Self-test only.", licence="Apache-2.0", warnings=["random weights"])
        return save_package(os.path.join(folder, "scdlsegment-selftest"), card, states, labels)

    # -- tests ------------------------------------------------------------------------------------
    def test_ProgressParsing(self):
        """JSON lines of a child -> percentage, warnings, error (numbers computed by hand)."""
        from SCDLSlicerLib.childoutput import ProgressTracker

        self.delayDisplay("Progress parsing")
        tracker = ProgressTracker()
        tracker.feed('{"phase": "read", "done": 1, "total": 1, "eta_s": 0.0}')
        self.assertAlmostEqual(tracker.percent, 5.0)  # read = 5 of 100 weight units
        tracker.feed('{"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}')
        self.assertAlmostEqual(tracker.percent, 25.0 + 60.0 * 3 / 12)  # read + preprocess + adapt (passed over) + 3/12 of infer
        tracker.feed('{"event": "warning", "text": "looks like MR"}')
        tracker.feed("warning: looks like MR")  # the same warning printed on stderr: kept once
        self.assertEqual(tracker.warnings, ["looks like MR"])
        tracker.feed("error: /tmp/model: checksum mismatch. Fix: re-download")
        self.assertEqual(tracker.error, "/tmp/model: checksum mismatch. Fix: re-download")
        tracker.feed('{"phase": "done", "output": "/tmp/x.seg.nrrd"}')
        self.assertEqual(tracker.percent, 100.0)
        self.assertEqual(tracker.result["output"], "/tmp/x.seg.nrrd")

    def test_SceneRoundTrip(self):
        """Volume -> file -> volume keeps the geometry; a segmentation file -> node with names, colours,
        terminology, reference geometry and subject-hierarchy placement (no child process, no torch)."""
        import numpy as np

        self.delayDisplay("Scene round trip")
        volume = self._syntheticCt()
        folder = tempfile.mkdtemp(prefix="SCDLSegmentTest-")
        try:
            path = sceneio.write_volume(volume, os.path.join(folder, "ct.nrrd"))
            again = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), "again", 0)
            self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(volume)))
            a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
            volume.GetIJKToRASMatrix(a)
            again.GetIJKToRASMatrix(b)
            for r in range(4):
                for c in range(4):
                    self.assertAlmostEqual(a.GetElement(r, c), b.GetElement(r, c), places=4)
            self.assertIsNone(volume.GetStorageNode())  # the user's node is untouched

            # A segmentation written by Slicer itself, with generic names/colours ...
            labels = np.zeros(slicer.util.arrayFromVolume(volume).shape, dtype=np.uint8)
            labels[10:20, 10:20, 10:20] = 1
            labels[25:30, 20:30, 20:30] = 2
            labelmap = slicer.util.addVolumeFromArray(labels, nodeClassName="vtkMRMLLabelMapVolumeNode")
            labelmap.CopyOrientation(volume)
            written = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, written)
            storage = written.CreateDefaultStorageNode()
            storage.SetFileName(os.path.join(folder, "seg.seg.nrrd"))
            self.assertTrue(storage.WriteData(written))

            # ... loaded back as a result of SCDL: the label table's names, colours and codes are applied.
            sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
            study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient"), "Study")
            volumeItem = sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume)
            sh.SetItemParent(volumeItem, study)
            spleen = "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^"
            table = [sceneio.LabelInfo(1, "spleen", (157 / 255, 108 / 255, 162 / 255), spleen),
                     sceneio.LabelInfo(2, "liver", (221 / 255, 130 / 255, 101 / 255), None)]
            node = sceneio.load_segmentation(storage.GetFileName(), "result", volume)
            report = sceneio.apply_label_table(node, table)
            sceneio.place_in_subject_hierarchy(node, volume)
            sceneio.show_segmentation(node, volume)
            segmentation = node.GetSegmentation()
            self.assertEqual(sorted(report.segment_names), ["liver", "spleen"])
            spleenSegment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("spleen"))
            self.assertEqual(spleenSegment.GetTerminology(), spleen)
            for got, want in zip(spleenSegment.GetColor(), table[0].color):
                self.assertAlmostEqual(got, want, places=4)
            self.assertEqual(sh.GetItemParent(sh.GetItemByDataNode(node)), study)
            self.assertTrue(node.GetSegmentation().ContainsRepresentation("Closed surface"))
            self.assertIsNone(node.GetStorageNode())  # the temporary file is not the node's storage
            geometry = node.GetSegmentation().GetConversionParameter("Reference image geometry")
            self.assertTrue(geometry.startswith("4;0;0;-100;0;4;0;-120;0;0;4;30;"), geometry)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_SegmentEndToEnd(self):
        """Synthetic CT -> ``scdl segment`` child with a random tiny model -> segmentation node."""
        plan = deps.plan()
        if not plan.empty:
            self.delayDisplay("End-to-end part skipped: install the Python dependencies first ({}).".format(
                ", ".join((["torch"] if plan.torch else []) + plan.packages)))
            return
        self.delayDisplay("End-to-end segmentation (random tiny model)")
        folder = tempfile.mkdtemp(prefix="SCDLSegmentTest-")
        try:
            model = self._tinyModel(folder)
            volume = self._syntheticCt()
            logic = SCDLSegmentLogic()
            result = logic.segment(volume, model=str(model), device="cpu", timeout=300)
            self.assertIsNotNone(result)
            segmentation = result.segmentation_node.GetSegmentation()
            from scdl.labels.table import LabelTable

            liver = LabelTable.load("synapse").by_value(6)
            self.assertEqual(segmentation.GetNumberOfSegments(), 1)
            segment = segmentation.GetNthSegment(0)
            self.assertEqual(segment.GetName(), liver.name)
            self.assertEqual(segment.GetTerminology(), liver.terminology_string())
            for got, want in zip(segment.GetColor(), liver.color):
                self.assertAlmostEqual(got, want / 255.0, places=4)
            # every voxel of the input is "liver": the segment covers the whole grid
            import numpy as np

            mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentation_node, segmentation.GetNthSegmentID(0), volume)
            self.assertEqual(int(np.count_nonzero(mask)), mask.size)
            # a plausible CT: no input warning (the model card's own warning, "random weights", is passed on)
            self.assertEqual([w for w in result.warnings if "random weights" not in w], [])
            self.assertTrue(segmentation.GetConversionParameter("Reference image geometry").startswith("4;0;0;-100;"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")
