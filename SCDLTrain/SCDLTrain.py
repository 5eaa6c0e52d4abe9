"""SCDLTrain: fine-tune an SCDL model on your own CT cohort, semi-supervised, from 3D Slicer.

The cohort comes from the scene (volumes with a segmentation are labeled, the others unlabeled) or from
folders / a manifest; the training runs ``PythonSlicer -m scdl train ... --progress json`` in a child process
(never in Slicer's GUI thread) that can be stopped and resumed; its JSON events become live curves (table,
plot series and chart nodes). When it ends, the model is registered in the user's model cache, selected in
SCDLSegment and its card shown. The Logic is Qt-free and drives everything through ``SCDLTrainLib`` and the
shared ``SCDLSlicerLib`` (child processes, jobs, dependency installation, scene <-> files, catalog).
Nothing heavy is imported at module load.
"""

import logging
import os
import shutil
import tempfile
import time

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


from SCDLTrainLib import SUBMODULES  # first: in a developer checkout it makes SCDLSlicerLib importable
from SCDLTrainLib import curves, estimate, export, handoff, options, scenecohort, segmentmap, trainjob
from SCDLSlicerLib import commands, devices, jobs, models, sceneio, scenejob
from SCDLSlicerLib import dependencies as deps
from SCDLSlicerLib.childoutput import format_seconds
from SCDLSlicerLib.panel import PanelMixin

PAPER = ('Su et al., "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image '
         'Segmentation", arXiv 2603.05202, 2026')

#: Milliseconds between two polls of a running child process.
POLL_INTERVAL_MS = 200
#: Cohort sources, in the order of the source selector.
COHORT_SOURCES = ("scene", "folders", "manifest")
#: Label tables offered for the label maps of a folder cohort ("" = already in the model's numbering).
SOURCE_LABEL_TABLES = ("", "totalsegmentator_v2", "synapse", "amos")
#: The paper's iteration count and patch edge (METHOD.md; ``scdl.training.config.DEFAULTS``).
PAPER_ITERATIONS, PAPER_PATCH = 17000, 96
#: Columns of the panel's tables.
COHORT_COLUMNS = ("Case", "Role", "Segments", "Used as", "Annotated classes")
MAPPING_COLUMNS = ("Segment", "Model class", "Matched by", "Cases")
PROBLEM_COLUMNS = ("Case", "Severity", "Problem", "Fix")


#
# SCDLTrain
#


class SCDLTrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SCDL Train")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []  # SCDLSegment ships in the same extension; PyTorch is checked when needed
        self.parent.contributors = ["SCDL extension contributors"]
        self.parent.helpText = _(
            "Fine-tune an SCDL segmentation model on your own CT cohort, locally and semi-supervised: volumes "
            "with a segmentation teach the model directly, volumes without one through cross pseudo supervision "
            "and the class-distribution (SCDL) term. Check the cohort (every problem of every case is listed), "
            "choose the initial model and the options, start, watch the loss and validation Dice curves, stop "
            "and resume at will. The trained model is registered and selected in SCDL Segment."
            "<p>Training runs in a separate process on the CPU or a GPU. Method: {paper}.</p>"
            "<p>Research software, not for clinical use.</p>"
        ).format(paper=PAPER)
        self.parent.acknowledgementText = _(
            "SCDL (Semantic Class Distribution Learning) was proposed by {paper}. This extension re-implements the "
            "method; it uses MONAI, PyTorch, SimpleITK and slicerio."
        ).format(paper=PAPER)


#
# SCDLTrainParameterNode
#


@parameterNodeWrapper
class SCDLTrainParameterNode:
    """State of the module panel (saved with the scene).

    cohortSource - ``scene``, ``folders`` or ``manifest``.
    labeledFolder, unlabeledFolder, valFolder, sourceLabels - folder cohort (``--labeled`` ... ``--source-labels``).
    manifestPath - manifest cohort (``--cohort``).
    valFraction - scene cohort: share of the labeled volumes used for validation.
    segmentMapping - the user's corrections of segment -> class (JSON ``{segment key: class value}``).
    initModel - model id to fine-tune ("" trains from scratch).
    framework, scdlWeight, iterations, patchSize, labeledBatch, unlabeledBatch, device, cpuPreset, advanced -
        training options (see ``SCDLTrainLib.options``).
    runsFolder, runName - where the next run goes (``runsFolder/runName``).
    runFolder - the current or last run (resume, curves, result).
    trainedModelId - the model the last finished run registered.
    """

    cohortSource: str = "scene"
    labeledFolder: str = ""
    unlabeledFolder: str = ""
    valFolder: str = ""
    sourceLabels: str = ""
    manifestPath: str = ""
    valFraction: float = 0.2
    segmentMapping: str = ""
    initModel: str = ""
    framework: str = "cps-scdl"
    scdlWeight: float = 0.1
    iterations: int = PAPER_ITERATIONS
    patchSize: int = PAPER_PATCH
    labeledBatch: int = 2
    unlabeledBatch: int = 2
    device: str = "auto"
    cpuPreset: bool = False
    advanced: str = ""
    runsFolder: str = ""
    runName: str = ""
    runFolder: str = ""
    trainedModelId: str = ""


#
# SCDLTrainWidget
#


class SCDLTrainWidget(PanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI glue: widgets <-> parameter node, tables, and a timer that polls the running child (the parts shared
    with SCDLSegment are in ``SCDLSlicerLib.panel``)."""

    HELPER_PACKAGE = "SCDLTrainLib"
    HELPER_SUBMODULES = SUBMODULES

    def __init__(self, parent=None) -> None:
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models = []
        self._devices = []
        self._task = None          # (kind, job): kind in "check", "train", "register", "review"
        self._timer = None
        self._curves = None
        self._matches = []
        self._cases = []
        self._export = None
        self._check = None         # (signature, CohortCheck, scene problems) of the last finished check
        self._sceneProblems = []
        self._signatureAtCheck = None
        self._updating = False
        ScriptedLoadableModuleWidget.__init__(self, parent)

    # -- setup ------------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SCDLTrain.ui"))
        self.layout.addWidget(uiWidget)
        ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.connectUi(ui, SCDLTrainLogic())

    def connectUi(self, ui, logic) -> None:
        """Wire the widgets (from the .ui file, or a stand-in in tests) to the handlers."""
        self._attach(ui, logic, qt.QTimer(), POLL_INTERVAL_MS)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onSceneChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onSceneChanged)

        ui.cohortSourceSelector.connect("currentIndexChanged(int)", self.onCohortSourceChanged)
        ui.valFractionSpinBox.connect("valueChanged(double)", self.onValFractionChanged)
        ui.refreshCohortButton.connect("clicked()", self.refreshSceneCohort)
        ui.cohortTable.connect("cellChanged(int,int)", self.onCohortCellChanged)
        ui.mappingTable.connect("cellChanged(int,int)", self.onMappingCellChanged)
        ui.labeledFolderButton.connect("directoryChanged(QString)", self.onLabeledFolderChanged)
        ui.unlabeledFolderButton.connect("directoryChanged(QString)", self.onUnlabeledFolderChanged)
        ui.valFolderButton.connect("directoryChanged(QString)", self.onValFolderChanged)
        ui.sourceLabelsSelector.connect("currentIndexChanged(int)", self.onSourceLabelsChanged)
        ui.manifestPathLineEdit.connect("currentPathChanged(QString)", self.onManifestPathChanged)
        ui.checkCohortButton.connect("clicked()", self.onCheckCohort)
        ui.initModelSelector.connect("currentIndexChanged(int)", self.onInitModelSelected)
        ui.refreshModelsButton.connect("clicked()", self.refreshModels)
        ui.frameworkSelector.connect("currentIndexChanged(int)", self.onFrameworkSelected)
        ui.scdlWeightSpinBox.connect("valueChanged(double)", self.onScdlWeightChanged)
        ui.iterationsSpinBox.connect("valueChanged(int)", self.onIterationsChanged)
        ui.patchSizeSpinBox.connect("valueChanged(int)", self.onPatchSizeChanged)
        ui.labeledBatchSpinBox.connect("valueChanged(int)", self.onLabeledBatchChanged)
        ui.unlabeledBatchSpinBox.connect("valueChanged(int)", self.onUnlabeledBatchChanged)
        ui.deviceSelector.connect("currentIndexChanged(int)", self.onDeviceSelected)
        ui.cpuPresetCheckBox.connect("toggled(bool)", self.onCpuPresetToggled)
        ui.advancedTextEdit.connect("textChanged()", self.onAdvancedChanged)
        ui.runsFolderButton.connect("directoryChanged(QString)", self.onRunsFolderChanged)
        ui.runNameLineEdit.connect("textChanged(QString)", self.onRunNameChanged)
        ui.startButton.connect("clicked()", self.onStart)
        ui.stopButton.connect("clicked()", self.onStop)
        ui.resumeButton.connect("clicked()", self.onResume)
        ui.showCurvesButton.connect("clicked()", self.onShowCurves)
        ui.openRunFolderButton.connect("clicked()", self.onOpenRunFolder)
        ui.reviewButton.connect("clicked()", self.onReview)
        ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)

        self._fillStaticSelectors()
        self.refreshModels()
        self.updateDependencyStatus()
        self.initializeParameterNode()

    def _fillStaticSelectors(self) -> None:
        ui = self.ui
        labels = {"scene": _("Scene: volumes and their segmentations"), "folders": _("Folders"),
                  "manifest": _("Manifest file (CSV or JSON)")}
        for selector, items in (
                (ui.cohortSourceSelector, [(labels[s], s) for s in COHORT_SOURCES]),
                (ui.frameworkSelector, [(_("CPS + SCDL (semi-supervised, class-balanced)"), "cps-scdl"),
                                        (_("CPS (semi-supervised)"), "cps"),
                                        (_("Supervised (labeled volumes only)"), "supervised")]),
                (ui.sourceLabelsSelector, [(_("model's numbering"), "")] + [(t, t) for t in SOURCE_LABEL_TABLES[1:]])):
            wasBlocked = selector.blockSignals(True)
            selector.clear()
            for text, data in items:
                selector.addItem(text, data)
            selector.blockSignals(wasBlocked)
        try:
            self._devices = devices.list_devices(probe_gpus=False)
        except Exception:  # noqa: BLE001 - a broken CUDA install must not break the panel
            self._devices = devices.base_devices()
        wasBlocked = ui.deviceSelector.blockSignals(True)
        ui.deviceSelector.clear()
        for value, label in self._devices:
            ui.deviceSelector.addItem(label, value)
        ui.deviceSelector.blockSignals(wasBlocked)
        for table, columns in ((ui.cohortTable, COHORT_COLUMNS), (ui.mappingTable, MAPPING_COLUMNS),
                               (ui.problemsTable, PROBLEM_COLUMNS)):
            table.setColumnCount(len(columns))
            table.setHorizontalHeaderLabels(list(columns))

    def cleanup(self) -> None:
        if self._task is not None:
            kind, job = self._task
            if kind == "train":
                job.stop()  # Slicer is closing: the run saves a checkpoint, Resume continues it later
            else:
                job.cancel()
        self._detach()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self._parameterNode and self._parameterNode.cohortSource == "scene":
            self.refreshSceneCohort()

    def exit(self) -> None:
        self._disconnectParameterNode(self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None and self._task[0] in ("check", "review"):
            self._task[1].cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        super().onSceneEndClose(caller, event)
        if self._task is not None and self._task[0] == "train":
            # the run goes on (it only writes files); its curves are drawn again in the new scene
            job = self._task[1]
            self._curves = self.logic.curvesForRun(job.run_dir)
            self.logic.updateCurves(self._curves, job.monitor)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onSceneChanged(self, caller=None, event=None, node=None) -> None:
        """A CT volume or a segmentation was added or removed: the last check no longer describes the scene."""
        if node is not None and (node.IsA("vtkMRMLLabelMapVolumeNode") or not (
                node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLSegmentationNode"))):
            return
        if self._parameterNode and self._parameterNode.cohortSource == "scene" and self._check is not None:
            self._check = None
            self._updateButtons()

    # -- parameter node ---------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        if not node.runName and not node.runFolder:       # a new panel state: defaults that fit this machine
            try:
                defaults = self.logic.panelDefaults(node.advanced.splitlines())
            except Exception as err:  # noqa: BLE001 - the panel opens with the dataclass defaults
                logging.warning(f"SCDLTrain: no machine defaults ({err})")
                defaults = {}
            wasModified = node.StartModify()
            for key, value in defaults.items():
                setattr(node, key, value)
            node.EndModify(wasModified)
        if not node.runsFolder:
            node.runsFolder = str(self.logic.defaultRunsFolder())
        if not node.runName:
            node.runName = self.logic.newRunName()

    def setParameterNode(self, inputParameterNode) -> None:
        self._connectParameterNode(inputParameterNode, self._onParameterNodeModified)
        self._updateGui()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if not self._updating:
            self._updateGui()

    def _updateGui(self) -> None:
        """Parameter node -> widgets (signals blocked), then the estimate and the buttons."""
        node = self._parameterNode
        if node is None or self.ui is None:
            self._updateButtons()
            return
        self._updating = True
        try:
            ui = self.ui
            self._setCombo(ui.cohortSourceSelector, node.cohortSource)
            self._setCombo(ui.frameworkSelector, node.framework)
            self._setCombo(ui.sourceLabelsSelector, node.sourceLabels)
            self._setCombo(ui.initModelSelector, node.initModel)
            self._setCombo(ui.deviceSelector, node.device)
            for widget, value in ((ui.valFractionSpinBox, node.valFraction), (ui.scdlWeightSpinBox, node.scdlWeight),
                                  (ui.iterationsSpinBox, node.iterations), (ui.patchSizeSpinBox, node.patchSize),
                                  (ui.labeledBatchSpinBox, node.labeledBatch),
                                  (ui.unlabeledBatchSpinBox, node.unlabeledBatch)):
                self._setValue(widget, "value", value)
            self._setValue(ui.cpuPresetCheckBox, "checked", node.cpuPreset)
            for widget, value in ((ui.labeledFolderButton, node.labeledFolder),
                                  (ui.unlabeledFolderButton, node.unlabeledFolder),
                                  (ui.valFolderButton, node.valFolder), (ui.runsFolderButton, node.runsFolder)):
                self._setValue(widget, "directory", value)
            self._setValue(ui.manifestPathLineEdit, "currentPath", node.manifestPath)
            self._setValue(ui.runNameLineEdit, "text", node.runName)
            if ui.advancedTextEdit.toPlainText() != node.advanced:
                wasBlocked = ui.advancedTextEdit.blockSignals(True)
                ui.advancedTextEdit.setPlainText(node.advanced)
                ui.advancedTextEdit.blockSignals(wasBlocked)
            source = node.cohortSource
            ui.sceneCohortWidget.visible = source == "scene"
            ui.foldersCohortWidget.visible = source == "folders"
            ui.manifestCohortWidget.visible = source == "manifest"
            ui.scdlWeightSpinBox.enabled = node.framework in options.SCDL_FRAMEWORKS
            ui.unlabeledBatchSpinBox.enabled = node.framework != "supervised"
        finally:
            self._updating = False
        self._updateEstimate()
        self._updateButtons()

    @staticmethod
    def _setCombo(combo, data) -> None:
        values = [combo.itemData(i) for i in range(combo.count())]
        if data in values and combo.currentIndex != values.index(data):
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = values.index(data)
            combo.blockSignals(wasBlocked)

    @staticmethod
    def _setValue(widget, attribute, value) -> None:
        if getattr(widget, attribute, None) != value:
            wasBlocked = widget.blockSignals(True)
            setattr(widget, attribute, value)
            widget.blockSignals(wasBlocked)

    def _set(self, name, value) -> None:
        """Widget -> parameter node (the check is stale afterwards)."""
        if self._parameterNode is None or self._updating:
            return
        if getattr(self._parameterNode, name) != value:
            setattr(self._parameterNode, name, value)
            self._check = None
            self._updateGui()

    # -- option handlers --------------------------------------------------------------------------
    def onCohortSourceChanged(self, index) -> None:
        if 0 <= index < len(COHORT_SOURCES):
            self._set("cohortSource", COHORT_SOURCES[index])
            if COHORT_SOURCES[index] == "scene":
                self.refreshSceneCohort()

    def onValFractionChanged(self, value) -> None:
        self._set("valFraction", float(value))
        self.refreshSceneCohort()

    def onLabeledFolderChanged(self, path) -> None:
        self._set("labeledFolder", str(path))

    def onUnlabeledFolderChanged(self, path) -> None:
        self._set("unlabeledFolder", str(path))

    def onValFolderChanged(self, path) -> None:
        self._set("valFolder", str(path))

    def onSourceLabelsChanged(self, index) -> None:
        if 0 <= index < len(SOURCE_LABEL_TABLES):
            self._set("sourceLabels", self.ui.sourceLabelsSelector.itemData(index))

    def onManifestPathChanged(self, path) -> None:
        self._set("manifestPath", str(path))

    def onInitModelSelected(self, index) -> None:
        if 0 <= index < self.ui.initModelSelector.count():
            self._set("initModel", self.ui.initModelSelector.itemData(index) or "")
            self.refreshSceneCohort()  # the classes to map onto may have changed

    def onFrameworkSelected(self, index) -> None:
        if 0 <= index < self.ui.frameworkSelector.count():
            self._set("framework", self.ui.frameworkSelector.itemData(index))

    def onScdlWeightChanged(self, value) -> None:
        self._set("scdlWeight", float(value))

    def onIterationsChanged(self, value) -> None:
        self._set("iterations", int(value))

    def onPatchSizeChanged(self, value) -> None:
        self._set("patchSize", int(value))

    def onLabeledBatchChanged(self, value) -> None:
        self._set("labeledBatch", int(value))

    def onUnlabeledBatchChanged(self, value) -> None:
        self._set("unlabeledBatch", int(value))

    def onDeviceSelected(self, index) -> None:
        if 0 <= index < len(self._devices):
            self._set("device", self._devices[index][0])

    def onCpuPresetToggled(self, checked) -> None:
        """The CPU preset also sets its iteration count and patch size (both stay editable)."""
        if self._parameterNode is None or self._updating:
            return
        iterations, patch = self.logic.presetDefaults("cpu" if checked else "paper")
        if self._parameterNode.initModel:
            patch = 0                                      # automatic: the initial model's own patch
        wasModified = self._parameterNode.StartModify()
        self._parameterNode.cpuPreset = bool(checked)
        self._parameterNode.iterations = iterations
        self._parameterNode.patchSize = patch
        self._parameterNode.EndModify(wasModified)
        self._check = None
        self._updateGui()

    def onAdvancedChanged(self) -> None:
        self._set("advanced", self.ui.advancedTextEdit.toPlainText())

    def onRunsFolderChanged(self, path) -> None:
        self._set("runsFolder", str(path))

    def onRunNameChanged(self, text) -> None:
        self._set("runName", str(text).strip())

    # -- models and devices -----------------------------------------------------------------------
    def refreshModels(self) -> None:
        """Fill the initial-model selector: "from scratch" and every installed model."""
        try:
            self._models = [m for m in self.logic.listModels() if m.get("installed")]
        except Exception as err:  # noqa: BLE001 - the panel must open even if the core cannot be imported
            self._models = []
            self.ui.modelCardBrowser.setHtml("<p>" + _("Cannot read the model catalog: {error}").format(error=err) + "</p>")
        combo = self.ui.initModelSelector
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("(none: train from scratch, Synapse classes)"), "")
        for model in self._models:
            combo.addItem(models.model_label(model), model["id"])
        combo.blockSignals(wasBlocked)
        if self._parameterNode is not None:
            self._setCombo(combo, self._parameterNode.initModel)

    # -- scene cohort -----------------------------------------------------------------------------
    def refreshSceneCohort(self) -> None:
        """Scan the scene: cases with their roles, segments matched to the model's classes."""
        node = self._parameterNode
        if node is None or node.cohortSource != "scene":
            return
        try:
            table = self.logic.targetTable(node.initModel, self._advancedLines())
        except Exception as err:  # noqa: BLE001 - shown in the panel
            self.ui.cohortCountsLabel.text = _("Cannot read the model's classes: {error}").format(error=err)
            return
        overrides = segmentmap.overrides_from_json(node.segmentMapping)
        self._cases = self.logic.sceneCases(node.valFraction)
        self._matches = self.logic.segmentMatches(self._cases, table, overrides)
        self._n_classes = len([e for e in table.entries if int(e.value) != 0])
        self._fillCohortTable()
        self._fillMappingTable()
        counts = {split: sum(1 for c in self._cases if c.split == split and (c.labeled or split != "val"))
                  for split in ("train", "val", "exclude")}
        labeled = sum(1 for c in self._cases if c.split == "train" and c.labeled)
        self.ui.cohortCountsLabel.text = _(
            "Scene: {labeled} labeled and {unlabeled} unlabeled training volume(s), {val} for validation, "
            "{excluded} excluded. Check the cohort before training.").format(
            labeled=labeled, unlabeled=counts["train"] - labeled, val=counts["val"], excluded=counts["exclude"])
        self._updateButtons()

    def _fillCohortTable(self) -> None:
        table = self.ui.cohortTable
        wasBlocked = table.blockSignals(True)
        table.setRowCount(len(self._cases))
        for row, case in enumerate(self._cases):
            segments = ", ".join(sorted({s[0] for s in case.segments()})) if case.labeled else _("(unlabeled)")
            used = {"train": _("training") if case.labeled else _("training (unlabeled)"),
                    "val": _("validation"), "exclude": _("not used")}[case.split]
            for column, text in enumerate((case.name, case.role, segments, used, self._annotatedText(case))):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        table.blockSignals(wasBlocked)

    def _annotatedText(self, case) -> str:
        """The model classes a labeled case annotates (its mapped segments); the others are unknown in it,
        not background (partial labels)."""
        if not case.labeled:
            return ""
        names = sorted({m.class_name for m in getattr(self, "_matches", []) if m.trained and case.name in m.cases})
        total = getattr(self, "_n_classes", 0)
        if total and len(names) >= total:
            return _("all {n}").format(n=total)
        if not names:
            return _("none")
        return _("{names} (the other {n} unknown)").format(names=", ".join(names), n=max(total - len(names), 0))

    def _fillMappingTable(self) -> None:
        table = self.ui.mappingTable
        wasBlocked = table.blockSignals(True)
        table.setRowCount(len(self._matches))
        how = {"user": _("you"), "name": _("name"), "terminology": _("terminology"), "unknown": _("UNKNOWN")}
        for row, match in enumerate(self._matches):
            texts = (match.name, match.class_name if match.known else "", how[match.how], ", ".join(match.cases))
            for column, text in enumerate(texts):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        table.blockSignals(wasBlocked)

    def onCohortCellChanged(self, row, column) -> None:
        """The user typed a role (auto, train, val, exclude) into the cohort table."""
        if column != 1 or not 0 <= row < len(self._cases):
            self._fillCohortTable()
            return
        text = self.ui.cohortTable.item(row, column).text().strip().lower()
        case = self._cases[row]
        try:
            self.logic.setCaseRole(slicer.mrmlScene.GetNodeByID(case.volume_id), text)
        except ValueError:
            self._error(_("Role '{role}' of {case}: use one of {roles}.").format(
                role=text, case=case.name, roles=", ".join(scenecohort.ROLES)))
        self._check = None
        self.refreshSceneCohort()

    def onMappingCellChanged(self, row, column) -> None:
        """The user typed a model class (name, value or 'background') for a segment."""
        if column != 1 or not 0 <= row < len(self._matches):
            self._fillMappingTable()
            return
        node = self._parameterNode
        match = self._matches[row]
        text = self.ui.mappingTable.item(row, column).text()
        try:
            table = self.logic.targetTable(node.initModel, self._advancedLines())
            value = segmentmap.parse_class(text, table)
        except ValueError as err:
            self._error(_("Segment '{segment}': {error}").format(segment=match.name, error=err))
            self._fillMappingTable()
            return
        overrides = segmentmap.overrides_from_json(node.segmentMapping)
        overrides[match.key] = value
        self._set("segmentMapping", segmentmap.overrides_to_json(overrides))
        self.refreshSceneCohort()

    def _advancedLines(self) -> list:
        try:
            return options.parse_advanced(self._parameterNode.advanced if self._parameterNode else "")
        except options.OptionsError:
            return []

    # -- options, estimate, buttons ------------------------------------------------------------------
    def _options(self):
        """The training options from the panel (raises ``options.OptionsError``)."""
        return self.logic.optionsFromParameters(self._parameterNode)

    def _updateEstimate(self) -> None:
        try:
            opts = self._options()
            self.ui.estimateLabel.text = self.logic.estimate(opts).text()
        except options.OptionsError as err:
            self.ui.estimateLabel.text = _("Settings: {error}").format(error=err)
        except Exception as err:  # noqa: BLE001 - e.g. the core package is missing: shown, never raised
            self.ui.estimateLabel.text = _("No estimate: {error}").format(error=err)

    def _checkIsCurrent(self) -> bool:
        if self._check is None:
            return False
        try:
            return self._check[0] == self._signature() and self._check[1].ok and not any(
                p.severity == "error" for p in self._check[2])
        except options.OptionsError:
            return False

    def _signature(self) -> str:
        opts = self._options()
        roles = [(c.volume_id, c.role) for c in self._cases]
        return repr((opts.check_args(), self._parameterNode.segmentMapping, roles))

    def _updateButtons(self) -> None:
        if self.ui is None:
            return
        busy = self._task is not None
        training = busy and self._task[0] == "train"
        node = self._parameterNode
        ready = bool(node) and not busy and self._checkIsCurrent()
        self.ui.checkCohortButton.enabled = bool(node) and not busy
        self.ui.startButton.enabled = ready
        self.ui.startButton.toolTip = (_("Start training (a separate process).") if ready else
                                       _("Check the cohort first: Start is enabled when the check found no error "
                                         "and nothing changed since."))
        self.ui.stopButton.enabled = training and not self._task[1].cancelled
        self.ui.resumeButton.enabled = bool(node) and not busy and self._resumeTarget() is not None
        self.ui.reviewButton.enabled = bool(node) and not busy and bool(node.trainedModelId)
        self.ui.openRunFolderButton.enabled = bool(node) and bool(node.runFolder) and os.path.isdir(node.runFolder)
        self.ui.showCurvesButton.enabled = self._curves is not None

    # -- dependencies -------------------------------------------------------------------------------
    def ensureDependencies(self) -> bool:
        """Ask once (listing everything) and install what is missing; False if declined or failed."""
        return self._ensureDependencies(_("Python packages are needed before training (see Python dependencies)."))

    # -- check ---------------------------------------------------------------------------------------
    def onCheckCohort(self) -> None:
        """Export the scene cohort (if the source is the scene) and run ``scdl train --check-only``."""
        if self._task is not None:
            return
        node = self._parameterNode
        self._check = None
        self._setProblems([])
        try:
            opts = self._options()
        except options.OptionsError as err:
            self._error(str(err))
            return
        if not self.ensureDependencies():
            return
        sceneProblems = []
        self._export = None
        if node.cohortSource == "scene":
            self.refreshSceneCohort()
            try:
                self._export, sceneProblems = self.logic.exportSceneCohort(
                    opts.run_dir, node.initModel, self._advancedLines(), node.valFraction,
                    segmentmap.overrides_from_json(node.segmentMapping))
            except Exception as err:  # noqa: BLE001 - e.g. a volume cannot be written
                logging.exception("SCDLTrain: export failed")
                self._error(_("Could not export the scene cohort: {error}").format(error=err))
                return
            opts = self._options()
        self._setProblems(sceneProblems)
        if not self._export and node.cohortSource == "scene":
            return
        try:
            job = self.logic.startCohortCheck(opts)
        except Exception as err:  # noqa: BLE001
            self._error(_("Could not start the cohort check: {error}").format(error=err))
            return
        self._sceneProblems = sceneProblems
        self._signatureAtCheck = self._signature()
        self.ui.cohortCountsLabel.text = _("Checking every case...")
        self._startTask("check", job)

    def _finishCheck(self, job) -> None:
        result = job.result()
        if result is None:
            self.ui.cohortCountsLabel.text = _("Check cancelled.")
            return
        problems = list(self._sceneProblems) + [self.logic.caseProblem(p, self._export) for p in result.problems]
        self._setProblems(problems)
        if result.error:
            self.ui.cohortCountsLabel.text = _("The check failed: {error}").format(error=result.error)
            return
        self._check = (self._signatureAtCheck, result, list(self._sceneProblems))
        errors = sum(1 for p in problems if p.severity == "error")
        warnings = sum(1 for p in problems if p.severity == "warning")
        counts = result.counts
        text = _("{labeled} labeled, {unlabeled} unlabeled, {val} validation case(s); {errors} error(s), "
                 "{warnings} warning(s).").format(errors=errors, warnings=warnings, **counts)
        if result.validation_source != "val":
            text += " " + _("No validation case: Dice is measured on the training cases (optimistic).")
        self.ui.cohortCountsLabel.text = text + (" " + _("Ready to start.") if self._checkIsCurrent() else "")

    def _setProblems(self, problems) -> None:
        table = self.ui.problemsTable
        table.setRowCount(len(problems))
        for row, problem in enumerate(problems):
            for column, text in enumerate((problem.case or _("(cohort)"), problem.severity, problem.message, problem.fix)):
                table.setItem(row, column, qt.QTableWidgetItem(text))

    # -- training ------------------------------------------------------------------------------------
    def onStart(self) -> None:
        if self._task is not None:
            return
        if not self._checkIsCurrent():
            self._error(_("Check the cohort first (something changed since the last check, or it found errors)."))
            return
        if not self.ensureDependencies():
            return
        node = self._parameterNode
        try:
            opts = self._options()
            job = self.logic.startTraining(opts)
        except Exception as err:  # noqa: BLE001
            self._error(_("Could not start the training: {error}").format(error=err))
            return
        node.runFolder = str(opts.run_dir)
        self._beginRun(job)

    def _resumeTarget(self):
        """The run that Resume continues: the last run of the panel, else ``runsFolder/runName`` (so a run
        stopped in an earlier session is resumed by typing its name); None when neither can resume."""
        node = self._parameterNode
        if node is None:
            return None
        candidates = [node.runFolder]
        if node.runsFolder and node.runName:
            candidates.append(os.path.join(node.runsFolder, node.runName))
        return next((c for c in candidates if c and handoff.can_resume(c)), None)

    def onResume(self) -> None:
        if self._task is not None:
            return
        node = self._parameterNode
        target = self._resumeTarget()
        if target is None:
            self._error(_("There is no stopped run to resume (a run folder with config.json and checkpoint.pt "
                          "and no model yet): type the run's name, or start a new run."))
            return
        if not self.ensureDependencies():
            return
        node.runFolder = target
        try:
            job = self.logic.resumeTraining(target, node.device)
        except Exception as err:  # noqa: BLE001
            self._error(_("Could not resume the training: {error}").format(error=err))
            return
        self._beginRun(job)

    def _beginRun(self, job) -> None:
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = int(job.monitor.percent)
        self.ui.modelCardBrowser.setHtml("")
        self._curves = self.logic.curvesForRun(job.run_dir, self._parameterNode.initModel, self._advancedLines())
        self.logic.updateCurves(self._curves, job.monitor)
        self.ui.statusLabel.text = _("Starting (reading and preprocessing the cohort)...")
        self._startTask("train", job)
        self.onShowCurves()

    def onStop(self) -> None:
        if self._task is None or self._task[0] != "train":
            return
        self._task[1].stop()
        self.ui.statusLabel.text = _("Stopping after the current iteration (a checkpoint is saved)...")
        self._updateButtons()

    def _finishTraining(self, job) -> None:
        monitor = job.monitor
        self.logic.updateCurves(self._curves, monitor)
        node = self._parameterNode
        if job.stopped:
            self.ui.statusLabel.text = _("Stopped at iteration {iteration}; checkpoint saved. Resume continues from "
                                         "there.").format(iteration=monitor.checkpoint_iteration or monitor.iteration)
            return
        message = job.error_message()
        if message:
            resumable = handoff.can_resume(job.run_dir)
            self.ui.statusLabel.text = _("Failed.") + (" " + _("Resume continues from the last checkpoint.") if resumable else "")
            self._error(message)
            return
        if job.cancelled:  # killed before it could save
            self.ui.statusLabel.text = _("Stopped.")
            return
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text = _("Done: {iterations} iterations in {time}. Registering the model...").format(
            iterations=monitor.iteration, time=format_seconds(float(monitor.result.get("elapsed_s") or 0.0)))
        node.runName = self.logic.newRunName()  # the next Start goes into a new folder
        if job.model_dir is None:
            self._error(_("The training ended without reporting its model package; look into {folder}.").format(
                folder=job.run_dir))
            return
        self._register(job.model_dir)

    def _register(self, modelDir) -> None:
        try:
            modelId = handoff.model_id_of(modelDir)
        except ValueError as err:
            self._error(str(err))
            return
        replace = False
        if handoff.installed_model_path(modelId) is not None:
            replace = slicer.util.confirmOkCancelDisplay(
                _("A model with id '{id}' is already installed. Replace it with the model just trained?").format(id=modelId),
                windowTitle=_("SCDL: register model"))
            if not replace:
                self.ui.resultStatusLabel.text = _("Not registered: the model stays in {folder}.").format(folder=modelDir)
                return
        job = self.logic.startRegistration(modelDir, replace)
        job.modelDir = modelDir
        self._startTask("register", job)

    def _finishRegistration(self, job) -> None:
        try:
            modelId = self.logic.finishRegistration(job, job.modelDir)
        except RuntimeError as err:
            self.ui.resultStatusLabel.text = _("Registering failed.")
            self._error(str(err))
            return
        self._parameterNode.trainedModelId = modelId
        self.logic.selectInSegment(modelId)
        self._refreshSegmentModule()
        self.refreshModels()
        self.showResultCard(modelId)
        self.ui.resultStatusLabel.text = _("Model '{id}' registered and selected in SCDL Segment.").format(id=modelId)

    def _refreshSegmentModule(self) -> None:
        """Let an open SCDLSegment panel list the new model (only inside the Slicer application)."""
        try:
            widget = slicer.modules.scdlsegment.widgetRepresentation().self()
        except AttributeError:
            return
        if widget is not None and hasattr(widget, "refreshModels"):
            widget.refreshModels()

    def showResultCard(self, modelId) -> None:
        item, card = self.logic.modelCard(modelId)
        if item is None:
            self.ui.modelCardBrowser.setHtml("")
            return
        self.ui.modelCardBrowser.setHtml(models.card_html(item, card))

    def onShowCurves(self) -> None:
        if self._curves is None:
            return
        try:
            self.logic.showChart(self._curves.loss_chart)
        except AttributeError:  # no Plots module (tests, a custom Slicer without it): the nodes are still there
            pass

    def onOpenRunFolder(self) -> None:
        folder = self._parameterNode.runFolder if self._parameterNode else ""
        if folder and os.path.isdir(folder):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))

    # -- review ------------------------------------------------------------------------------------
    def onReview(self) -> None:
        if self._task is not None:
            if self._task[0] == "review":
                self._task[1].cancel()
            return
        node = self._parameterNode
        if not node.trainedModelId:
            return
        if not self.ensureDependencies():
            return
        try:
            job = self.logic.startReview(node.trainedModelId, node.device, node.runFolder)
        except Exception as err:  # noqa: BLE001
            self._error(_("Could not start the review: {error}").format(error=err))
            return
        self.ui.resultStatusLabel.text = _("Segmenting {count} validation case(s) with '{id}'...").format(
            count=len(job.items), id=node.trainedModelId)
        self._startTask("review", job)

    def _finishReview(self, job) -> None:
        self.ui.resultStatusLabel.text = job.summary()
        for item in job.items:
            self._appendLog(f"{item.label}: {item.status}" + (f" ({item.message})" if item.message else ""))

    # -- polling -------------------------------------------------------------------------------------
    def _startTask(self, kind, job) -> None:
        self._task = (kind, job)
        self._timer.start()
        self._updateButtons()

    def onPollTimer(self) -> None:
        """Hand the child's new output to the panel; finish the task when the child ended."""
        if self._task is None:
            self._timer.stop()
            return
        kind, job = self._task
        for line in job.poll():
            if kind == "review":
                continue
            if line.kind in ("warning", "error", "message", "cancelled", "log"):
                self._appendLog(line.text if line.kind == "log" else f"{line.kind}: {line.text}")
            elif line.kind == "event" and line.name in ("validation", "checkpoint", "model", "init", "start"):
                self._appendLog(self.logic.describeEvent(line.data))
        if kind == "train":
            self.ui.progressBar.value = int(job.monitor.percent)
            if not job.cancelled:
                self.ui.statusLabel.text = job.monitor.status_text()
            if job.monitor.take_changed():
                self.logic.updateCurves(self._curves, job.monitor)
        elif kind == "review":
            self.ui.progressBar.value = int(job.percent)
        if job.finished:
            self._timer.stop()
            self._task = None
            {"check": self._finishCheck, "train": self._finishTraining, "register": self._finishRegistration,
             "review": self._finishReview}[kind](job)
            self._updateButtons()

    def _error(self, text) -> None:
        self._showError(text, _("SCDL Train"))


#
# SCDLTrainLogic
#


class SCDLTrainLogic(ScriptedLoadableModuleLogic):
    """Scene cohort <-> files, and the ``scdl train`` child processes; usable from scripts without the GUI.

    Example (Python console)::

        logic = SCDLTrain.SCDLTrainLogic()
        export, problems = logic.exportSceneCohort("/data/runs/liver-ft")          # scene -> files
        opts = logic.makeOptions("/data/runs/liver-ft", {"manifest": str(export.manifest)}, preset="cpu")
        print(logic.checkCohort(opts).problems)                                     # scdl train --check-only
        job = logic.train(opts)                                                     # blocks; see startTraining
        modelId = logic.registerModel(job.model_dir)
    """

    def __init__(self, backend: str = "auto") -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.backend = backend
        commands.ensure_core_importable()

    def getParameterNode(self):
        return SCDLTrainParameterNode(super().getParameterNode())

    # -- models and classes -------------------------------------------------------------------------
    def listModels(self) -> list:
        return models.list_models()

    def targetTable(self, initModel: str = "", advanced=()):
        """The classes the run learns (``scdl.labels.table.LabelTable``): the initial model's, else the
        ``labels`` of the Advanced settings, else Synapse (the trainer's default)."""
        from scdl.labels.table import LabelTable
        from scdl.models.catalog import catalog_entry, resolve_model
        from scdl.models.package import ModelPackage
        from scdl.training.config import DEFAULTS, parse_value

        if initModel:
            entry = catalog_entry(initModel)
            try:
                return ModelPackage.load(resolve_model(initModel), verify=False).labels
            except Exception:  # noqa: BLE001 - not installed: the catalog names its table
                if entry and entry.get("labels"):
                    return LabelTable.load(entry["labels"])
                raise
        labels = DEFAULTS["labels"]
        for line in advanced:
            key, _sep, value = line.partition("=")
            if key.strip() == "labels":
                labels = str(parse_value(value.strip()))
        return LabelTable.load(labels)

    def panelDefaults(self, advanced=(), cuda=None) -> dict:
        """Parameter values for a new panel state that fit this machine (names of SCDLTrainParameterNode).

        Without CUDA: the CPU preset (its iterations; the paper's 17,000 would take days on a CPU). The initial
        model: the installed default model when its classes are the ones the run would learn (fine-tuning is
        the common case), with the automatic patch (its own). ``cuda``: None = ask torch (if installed).
        """
        from scdl.models.catalog import default_model_id

        if cuda is None:
            cuda = False
            if devices.torch_installed():
                import torch

                cuda = bool(torch.cuda.is_available())
        preset = "paper" if cuda else "cpu"
        iterations, patch = self.presetDefaults(preset)
        out = {"cpuPreset": not cuda, "iterations": iterations, "patchSize": patch}
        model_id = default_model_id()
        installed = {m["id"] for m in self.listModels() if m.get("installed")}
        if model_id in installed:
            try:
                same = self.targetTable(model_id).names == self.targetTable("", advanced).names
            except Exception:  # noqa: BLE001 - an unreadable package is not proposed
                same = False
            if same:
                out.update(initModel=model_id, patchSize=0)
        return out

    @staticmethod
    def presetDefaults(preset: str) -> tuple:
        """(iterations, patch edge) of a preset (``scdl.training.config``)."""
        from scdl.training.config import DEFAULTS, PRESET_VALUES

        values = {**DEFAULTS, **PRESET_VALUES[preset]}
        return int(values["iterations"]), int(values["patch_size"][0])

    # -- scene cohort -------------------------------------------------------------------------------
    def sceneCases(self, valFraction: float = 0.2) -> list:
        return scenecohort.scene_cases(valFraction)

    def setCaseRole(self, volume, role: str) -> None:
        scenecohort.set_role(volume, role)

    def segmentMatches(self, cases, table, overrides=None) -> list:
        segments = [(name, terminology, case.name) for case in cases if case.split != "exclude"
                    for name, terminology, _sid, _seg in case.segments()]
        return segmentmap.match_segments(segments, table, overrides)

    def exportSceneCohort(self, runDir, initModel: str = "", advanced=(), valFraction: float = 0.2, overrides=None):
        """Write the scene cohort into ``runDir/cohort`` (volumes, label maps in the model's numbering,
        ``manifest.csv``). Returns ``(ExportResult, problems)`` with the per-case problems found in the scene
        (mapping, roles, geometry); None instead of the result when the scene holds no case."""
        table = self.targetTable(initModel, advanced)
        cases = self.sceneCases(valFraction)
        matches = self.segmentMatches(cases, table, overrides)
        problems = scenecohort.mapping_problems(cases, matches)
        if not [c for c in cases if c.split != "exclude"]:
            problems.append(scenecohort.CaseProblem(
                "error", "no_cases", "the scene holds no CT volume to train on.", "",
                "load CT volumes (and segment some of them), or choose folders or a manifest."))
            return None, problems
        result = export.export_scene_cohort(cases, segmentmap.value_map(matches),
                                            os.path.join(str(runDir), "cohort"),
                                            class_names={int(e.value): e.name for e in table.entries if int(e.value)})
        return result, problems + result.problems

    def caseProblem(self, problem: dict, exported=None):
        """A problem of the core's check as a per-case row (the manifest row named by the volume's name)."""
        case = problem.get("case") or ""
        path = problem.get("path") or ""
        name = exported.case_for_row(case) if exported is not None else None
        if name:
            case = name
        elif case and (os.sep in case or "/" in case):  # a folder cohort names the folder: show the file
            case = os.path.basename(path or case)
        elif case and path:                             # a manifest row: "manifest.csv:3 (file name)"
            case = f"{case} ({os.path.basename(path)})"
        return scenecohort.CaseProblem(str(problem.get("severity", "error")), str(problem.get("code", "")),
                                       str(problem.get("message", "")), case, str(problem.get("fix", "")),
                                       str(problem.get("path", "")))

    # -- options ------------------------------------------------------------------------------------
    def defaultRunsFolder(self):
        from scdl.resources import user_home

        return user_home() / "runs"

    @staticmethod
    def newRunName() -> str:
        return time.strftime("%Y%m%d-%H%M%S")

    def makeOptions(self, runDir, cohort: dict, **kwargs) -> options.TrainOptions:
        """``options.TrainOptions`` with an absolute run folder (the child reports absolute paths then)."""
        return options.TrainOptions(run_dir=os.path.abspath(os.path.expanduser(str(runDir))), cohort=cohort, **kwargs)

    def optionsFromParameters(self, node) -> options.TrainOptions:
        """The panel's state as training options (raises ``options.OptionsError`` for a bad setting)."""
        if not node.runsFolder or not node.runName:
            raise options.OptionsError(_("Choose a runs folder and a run name."))
        runDir = os.path.join(node.runsFolder, node.runName)
        if node.cohortSource == "scene":
            cohort = {"manifest": os.path.join(os.path.abspath(runDir), "cohort", export.MANIFEST_NAME)}
        elif node.cohortSource == "folders":
            cohort = {"labeled": node.labeledFolder or None, "unlabeled": node.unlabeledFolder or None,
                      "val": node.valFolder or None, "labels": node.sourceLabels or None}
            if not (node.labeledFolder or node.unlabeledFolder):
                raise options.OptionsError(_("Choose the folder of labeled cases (images/ + labels/)."))
        else:
            if not node.manifestPath:
                raise options.OptionsError(_("Choose the cohort manifest (CSV or JSON)."))
            cohort = {"manifest": node.manifestPath}
        opts = self.makeOptions(
            runDir, cohort, framework=node.framework, iterations=node.iterations, init=node.initModel or None,
            device=node.device or "auto", preset="cpu" if node.cpuPreset else "paper", scdl_weight=node.scdlWeight,
            patch_size=node.patchSize, labeled_batch=node.labeledBatch, unlabeled_batch=node.unlabeledBatch,
            advanced=options.parse_advanced(node.advanced))
        opts.resolve()
        return opts

    def estimate(self, opts: options.TrainOptions) -> estimate.Estimate:
        """Time and memory estimate of a run (see ``SCDLTrainLib.estimate``)."""
        config = opts.resolve()
        width = int(config["network"]["n_filters"])
        if opts.init:
            from scdl.models.catalog import resolve_model
            from scdl.models.package import ModelPackage

            try:
                width = int(ModelPackage.load(resolve_model(opts.init), verify=False).card["architecture"]["n_filters"])
            except Exception:  # noqa: BLE001 - the check reports an unusable init model
                pass
        patch = config["patch_size"]
        edge = round((int(patch[0]) * int(patch[1]) * int(patch[2])) ** (1.0 / 3.0))
        device = opts.device if opts.device != "auto" else ("auto" if devices.torch_installed() else "cpu")
        return estimate.estimate(config["framework"], edge, width, int(config["iterations"]),
                                 int(config["labeled_batch"]), int(config["unlabeled_batch"]),
                                 int(config["accumulate"]), device)

    # -- check --------------------------------------------------------------------------------------
    def startCohortCheck(self, opts: options.TrainOptions) -> trainjob.CheckJob:
        """``scdl train ... --check-only --progress json`` in a child (started)."""
        return trainjob.CheckJob(opts.check_args(), backend=self.backend).start()

    def checkCohort(self, opts: options.TrainOptions, timeout=None) -> trainjob.CohortCheck:
        """Blocking convenience for scripts: the check's result."""
        job = self.startCohortCheck(opts)
        job.wait(timeout)
        return job.result()

    # -- training -----------------------------------------------------------------------------------
    def startTraining(self, opts: options.TrainOptions) -> trainjob.TrainJob:
        """Start ``scdl train`` in a child; drive it with ``poll()``, stop it with ``stop()``."""
        os.makedirs(str(opts.run_dir), exist_ok=True)
        return trainjob.TrainJob(opts.train_args(), opts.run_dir, backend=self.backend).start()

    def resumeTraining(self, runDir, device: str = "auto", iterations=None) -> trainjob.TrainJob:
        """``scdl train --resume RUN_DIR``: continues at the last checkpoint's iteration."""
        runDir = os.path.abspath(str(runDir))
        return trainjob.TrainJob(options.resume_args(runDir, iterations, device), runDir, resume=True,
                                 backend=self.backend).start()

    def train(self, opts: options.TrainOptions, timeout=None) -> trainjob.TrainJob:
        """Blocking convenience for scripts: start, wait, return the finished job."""
        job = self.startTraining(opts)
        job.wait(timeout)
        return job

    def curvesForRun(self, runDir, initModel: str = "", advanced=()) -> curves.TrainingCurves:
        """The plot nodes of a run (created, or found again for a resumed run)."""
        try:
            colors = curves.class_colors_from_table(self.targetTable(initModel, advanced))
        except Exception:  # noqa: BLE001 - grey curves rather than none
            colors = {}
        return curves.TrainingCurves(os.path.abspath(str(runDir)), os.path.basename(os.path.normpath(str(runDir))), colors)

    def updateCurves(self, trainingCurves, monitor) -> None:
        """Rewrite the curve tables from the monitor's rows."""
        if trainingCurves is not None:
            trainingCurves.update(monitor.loss_rows, monitor.loss_columns(), monitor.val_rows, monitor.class_names)

    def showChart(self, chartNode) -> None:
        """Show a chart in the view layout (the Plots module of the Slicer application)."""
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)

    @staticmethod
    def describeEvent(data: dict) -> str:
        """A log line for a training event."""
        event = data.get("event")
        if event == "validation":
            return _("validation at iteration {iteration}: mean Dice {dice:.4f} (best {best:.4f} at {best_it})").format(
                iteration=data.get("iteration"), dice=float(data.get("mean_dice") or float("nan")),
                best=float(data.get("best_mean_dice") or float("nan")), best_it=data.get("best_iteration"))
        if event == "checkpoint":
            return _("checkpoint at iteration {iteration}").format(iteration=data.get("iteration"))
        if event == "model":
            return _("model package written: {path}").format(path=data.get("path"))
        if event == "start":
            return _("training {framework} on {device}: iterations {start}..{end}, {labeled} labeled, {unlabeled} "
                     "unlabeled, {val} validation case(s)").format(
                framework=data.get("framework"), device=data.get("device"), start=data.get("iteration"),
                end=data.get("iterations"), labeled=data.get("labeled"), unlabeled=data.get("unlabeled"),
                val=data.get("validation"))
        if event == "init":
            return _("initialised from {model}: {n} classes kept, new: {new}").format(
                model=data.get("init"), n=len(data.get("matched") or []), new=", ".join(data.get("new") or []) or "-")
        return str(data)

    # -- hand-off ------------------------------------------------------------------------------------
    def startRegistration(self, modelDir, replace: bool = False):
        """``scdl models import MODEL_DIR`` in a child (verifies, then copies into the model cache)."""
        return handoff.register_job(modelDir, replace, backend=self.backend).start()

    def finishRegistration(self, job, modelDir) -> str:
        """The registered model's id; raises ``RuntimeError`` with the child's message on failure."""
        message = job.error_message()
        if message or not job.succeeded:
            raise RuntimeError(message or _("Registering the model was cancelled."))
        return handoff.model_id_of(modelDir)

    def registerModel(self, modelDir, replace: bool = False, timeout=None) -> str:
        """Blocking convenience: register ``modelDir`` in the model cache; returns its id."""
        job = self.startRegistration(modelDir, replace)
        job.wait(timeout)
        return self.finishRegistration(job, modelDir)

    def selectInSegment(self, modelId: str) -> None:
        """Make ``modelId`` SCDLSegment's model (its parameter node, saved with the scene)."""
        models.select_for_segmentation(modelId)

    def modelCard(self, modelId: str):
        """(catalog item, card) of an installed model, or (None, {})."""
        item = handoff.catalog_item(modelId)
        return (item, models.load_card(item)) if item else (None, {})

    # -- review -------------------------------------------------------------------------------------
    def validationVolumes(self, runDir) -> list:
        """The validation cases of a run as volume nodes: the scene volumes a scene cohort was exported from
        (manifest column ``volume_id``), else the images of the run's manifest or folders, loaded into the
        scene. Cases that cannot be loaded here (DICOM folders) are left out."""
        import json

        from scdl.training.cohort import load_folders, load_manifest

        config = json.loads(open(os.path.join(str(runDir), "config.json"), encoding="utf-8").read())
        spec = config.get("cohort") or {}
        if spec.get("manifest"):
            cohort = load_manifest(spec["manifest"])
        else:
            cohort = load_folders(spec.get("labeled"), spec.get("unlabeled"), spec.get("val"), spec.get("labels"))
        volumes = []
        for case in cohort.val:
            node = slicer.mrmlScene.GetNodeByID(case.extra.get("volume_id") or "") if case.extra.get("volume_id") else None
            if node is None and os.path.isfile(str(case.image)):
                node = slicer.modules.volumes.logic().AddArchetypeVolume(str(case.image), case.extra.get("name") or case.name, 0)
            if node is not None:
                volumes.append(node)
        return volumes

    def startReview(self, modelId: str, device: str = "auto", runDir=None, volumes=None) -> jobs.BatchJob:
        """Segment the validation cases (or ``volumes``) with ``modelId``, one after the other, as SCDLSegment
        does (``scenejob.SceneSegmentation``: same names, colours, terminology, geometry). Each result is marked
        with ``scenecohort.PREDICTION_ATTRIBUTE`` so that a later cohort never takes it for a label; the items'
        ``result`` is the segmentation node's ID."""
        if volumes is None:
            runDir = runDir or self.getParameterNode().runFolder
            volumes = self.validationVolumes(runDir)
        volumes = list(volumes)
        if not volumes:
            raise ValueError(_("There is no validation case to segment."))
        labels = models.label_infos(modelId)

        def makeJob(item):
            volume = slicer.mrmlScene.GetNodeByID(item.source)
            if volume is None:
                raise ValueError(_("the volume was removed from the scene"))
            return scenejob.SceneSegmentation(volume, modelId, device or "auto", labels=labels, backend=self.backend)

        def finish(item, run):
            result = run.finish()  # raises SegmentationFailed: the item failed with the child's message
            if result is None:
                item.status = "cancelled"
                return
            node = result.segmentation_node
            node.SetAttribute(scenecohort.PREDICTION_ATTRIBUTE, modelId)
            node.SetName(f"{item.label} - {modelId}")  # apart from the case's own segmentation
            item.status, item.result = "done", node.GetID()

        items = [jobs.BatchItem(v.GetName(), v.GetID()) for v in volumes]
        return jobs.BatchJob(items, makeJob, finish=finish).start()

    # -- checks -----------------------------------------------------------------------------------
    def dependencyPlan(self) -> deps.InstallPlan:
        return deps.plan()

    def installDependencies(self, plan: deps.InstallPlan) -> None:
        deps.install(plan)


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
