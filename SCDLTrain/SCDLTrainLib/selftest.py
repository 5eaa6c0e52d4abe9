"""SCDLTrain's self-test (Reload and Test, the extension factory; pytest runs it unchanged).

The module file imports :class:`SCDLTrainTest`, so Slicer finds it there.
"""

import os
import shutil
import tempfile

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from SCDLSlicerLib import dependencies as deps
from SCDLSlicerLib import sceneio
from SCDLTrainLib.logic import SCDLTrainLogic


#
# SCDLTrainTest
#


class SCDLTrainTest(ScriptedLoadableModuleTest):
    """Self-test: runs in Slicer (Reload and Test, the extension factory) and under pytest unchanged.

    It builds a synthetic scene (CT-like volumes, two of them with a liver/spleen segmentation), so it needs
    no data files. The end-to-end part (check + a 2-iteration training child + registration) is skipped,
    with a message, where the Python dependencies are not installed yet.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_EventsToCurves()
        self.setUp()
        self.test_SceneCohortExport()
        self.setUp()
        self.test_TrainEndToEnd()

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _syntheticCase(name, shift=0, labeled=True):
        """A 32x40x40 CT-like volume (8 mm): body 40 HU in air, a 'liver' block 60 HU, a 'spleen' block 45 HU,
        and (if labeled) a segmentation with segments named 'Liver' and 'spleen' that refers to it."""
        import numpy as np

        shape = (32, 40, 40)
        array = np.full(shape, -1000, dtype=np.int16)
        array[4:28, 6:34, 6:34] = 40
        liver = (slice(8, 20), slice(10 + shift, 22 + shift), slice(8, 20))
        spleen = (slice(10, 18), slice(12, 20), slice(24, 30))
        array[liver] = 60
        array[spleen] = 45
        volume = slicer.util.addVolumeFromArray(array, name=name)
        volume.SetSpacing(8.0, 8.0, 8.0)
        volume.SetOrigin(-160.0, -160.0, -128.0)
        if not labeled:
            return volume, None
        labels = np.zeros(shape, dtype=np.uint8)
        labels[liver] = 1
        labels[spleen] = 2
        labelmap = slicer.util.addVolumeFromArray(labels, nodeClassName="vtkMRMLLabelMapVolumeNode")
        labelmap.CopyOrientation(volume)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} segmentation")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
        sceneio.remove_node(labelmap)
        for index, segmentName in enumerate(("Liver", "spleen")):
            segmentation.GetSegmentation().GetNthSegment(index).SetName(segmentName)
        return volume, segmentation

    # -- tests ------------------------------------------------------------------------------------
    def test_EventsToCurves(self):
        """JSON lines of a training child -> monitor state -> table and chart nodes (hand-computed values)."""
        from SCDLSlicerLib.childoutput import parse_line
        from SCDLTrainLib.curves import TrainingCurves
        from SCDLTrainLib.monitor import TrainMonitor

        self.delayDisplay("Training events to curves")
        monitor = TrainMonitor()
        for line in (
                '{"event": "start", "iteration": 0, "iterations": 4, "framework": "cps-scdl", "device": "cpu"}',
                '{"event": "iteration", "iteration": 2, "iterations": 4, "loss": {"total": 2.5, "sup": 2.0, "cps": 4.0, "w_cps": 0.1}, "lr": 0.01, "eta_s": 6.0}',
                '{"phase": "train", "done": 2, "total": 4, "eta_s": 5.0}',
                '{"event": "validation", "iteration": 2, "mean_dice": 0.25, "dice": {"liver": 0.5, "spleen": 0.0}, "best_iteration": 2, "best_mean_dice": 0.25}',
                '{"event": "iteration", "iteration": 4, "iterations": 4, "loss": {"total": 1.5, "sup": 1.0, "cps": 5.0, "w_cps": 0.1}, "lr": 0.005, "eta_s": 0.0}'):
            monitor.update(parse_line(line))
        self.assertEqual(monitor.iteration, 4)
        self.assertAlmostEqual(monitor.percent, 100.0)
        self.assertEqual(monitor.loss_columns(), ["total", "sup", "cps"])  # ramp weights are not losses
        curves = TrainingCurves("/runs/selftest", "selftest", {"liver": (1.0, 0.0, 0.0)})
        curves.update(monitor.loss_rows, monitor.loss_columns(), monitor.val_rows, monitor.class_names)
        loss = curves.loss_table.GetTable()
        self.assertEqual(loss.GetNumberOfRows(), 2)
        self.assertEqual([loss.GetColumn(c).GetName() for c in range(loss.GetNumberOfColumns())],
                         ["iteration", "total", "sup", "cps"])
        self.assertEqual(loss.GetValueByName(1, "cps").ToDouble(), 5.0)
        dice = curves.dice_table.GetTable()
        self.assertEqual(dice.GetValueByName(0, "dice_liver").ToDouble(), 0.5)
        self.assertEqual(curves.loss_chart.GetNumberOfPlotSeriesNodes(), 3)
        self.assertEqual(curves.dice_chart.GetNumberOfPlotSeriesNodes(), 3)  # mean + 2 classes
        self.assertTrue(curves.loss_chart.GetYAxisLogScale())

    def test_SceneCohortExport(self):
        """Scene -> cases, segments mapped by name, export on the volume grid in Synapse numbering."""
        import numpy as np

        self.delayDisplay("Scene cohort export")
        volumeA, _segA = self._syntheticCase("caseA")
        self._syntheticCase("caseB", shift=4)
        self._syntheticCase("caseC", labeled=False)
        logic = SCDLTrainLogic()
        cases = logic.sceneCases(valFraction=0.5)
        self.assertEqual(sorted((c.name, c.labeled) for c in cases),
                         [("caseA", True), ("caseB", True), ("caseC", False)])
        self.assertEqual(sorted(c.split for c in cases), ["train", "train", "val"])  # 1 of the 2 labeled
        table = logic.targetTable()
        matches = logic.segmentMatches(cases, table)
        self.assertEqual({m.name: (m.value, m.how) for m in matches}, {"Liver": (6, "name"), "spleen": (1, "name")})
        folder = tempfile.mkdtemp(prefix="SCDLTrainTest-")
        try:
            result, problems = logic.exportSceneCohort(folder, valFraction=0.5)
            self.assertEqual(problems, [])
            self.assertEqual(result.counts(), {"labeled": 1, "unlabeled": 1, "val": 1})
            caseA = next(c for c in result.cases if c.name == "caseA")
            self.assertEqual(caseA.voxels, {6: 12 * 12 * 12, 1: 8 * 8 * 6})  # liver, spleen voxels of caseA
            loaded = slicer.modules.volumes.logic().AddArchetypeVolume(str(caseA.label), "exported", 1)
            exported = slicer.util.arrayFromVolume(loaded)
            self.assertEqual(exported.shape, (32, 40, 40))
            self.assertEqual(int(exported[12, 15, 12]), 6)
            self.assertEqual(int(exported[12, 15, 26]), 1)
            self.assertTrue(np.allclose(loaded.GetSpacing(), volumeA.GetSpacing()))
            self.assertTrue(np.allclose(loaded.GetOrigin(), volumeA.GetOrigin()))
            with open(result.manifest, encoding="utf-8") as handle:
                header = handle.readline().strip()
            self.assertEqual(header, "image,label,split,labels,annotated,name,volume_id")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_TrainEndToEnd(self):
        """Synthetic scene -> export -> check -> 2 training iterations in a child -> model registered."""
        plan = deps.plan()
        if not plan.empty:
            self.delayDisplay("End-to-end part skipped: install the Python dependencies first ({}).".format(
                ", ".join((["torch"] if plan.torch else []) + plan.packages)))
            return
        self.delayDisplay("End-to-end training (2 iterations, tiny network)")
        for name, shift, labeled in (("caseA", 0, True), ("caseB", 4, True), ("caseC", 2, False)):
            self._syntheticCase(name, shift, labeled)
        folder = tempfile.mkdtemp(prefix="SCDLTrainTest-")
        home = os.environ.get("SCDL_HOME")
        os.environ["SCDL_HOME"] = os.path.join(folder, "home")  # never touch the user's model cache
        try:
            logic = SCDLTrainLogic()
            runDir = os.path.join(folder, "selftest-run")
            # the synthetic cases draw liver and spleen only: the run learns those two (a class no case
            # annotates would be unknown everywhere, an error of the check)
            classes = os.path.join(folder, "liver_spleen.csv")
            with open(classes, "w", encoding="utf-8") as handle:
                handle.write("LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n1,spleen,157,108,162,255\n"
                             "6,liver,221,130,101,255\n")
            advanced = ["network.n_filters=2", "preprocessing.spacing_mm=[8,8,8]", "data.num_workers=0",
                        "threads=1", "log_every=1", "validation.every=0", "validation.sw_batch_size=4",
                        f'labels="{classes}"']
            exported, problems = logic.exportSceneCohort(runDir, valFraction=0.0, advanced=advanced)
            self.assertEqual([p for p in problems if p.severity == "error"], [])
            opts = logic.makeOptions(
                runDir, {"manifest": str(exported.manifest)}, framework="cps-scdl", iterations=2, preset="cpu",
                device="cpu", patch_size=16, labeled_batch=2, unlabeled_batch=1, advanced=advanced)
            check = logic.checkCohort(opts, timeout=300)
            self.assertTrue(check.ok, check.problems)
            self.assertEqual(check.counts["labeled"], 2)
            self.assertEqual(check.validation_source, "train-labeled")  # no validation case: said so
            job = logic.train(opts, timeout=600)
            self.assertTrue(job.succeeded, job.error_message())
            self.assertEqual([int(r["iteration"]) for r in job.monitor.loss_rows], [1, 2])
            modelId = logic.registerModel(job.model_dir, timeout=300)
            self.assertTrue(modelId.startswith("run-selftest-run"), modelId)
            item, card = logic.modelCard(modelId)
            self.assertTrue(item["installed"])
            self.assertEqual(card["provenance"]["iterations"], 2)
        finally:
            if home is None:
                os.environ.pop("SCDL_HOME", None)
            else:
                os.environ["SCDL_HOME"] = home
            shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")
