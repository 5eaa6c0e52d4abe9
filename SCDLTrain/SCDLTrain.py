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

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

# SCDLTrainLib first: in a developer checkout it makes SCDLSlicerLib importable.
from SCDLTrainLib import SUBMODULES, handoff, options, scenecohort, segmentmap
from SCDLTrainLib.logic import COHORT_SOURCES, SOURCE_LABEL_TABLES, SCDLTrainLogic, SCDLTrainParameterNode  # noqa: F401
from SCDLTrainLib.selftest import SCDLTrainTest  # noqa: F401 - Slicer finds the self-test in the module file
from SCDLSlicerLib import devices, models
from SCDLSlicerLib.childoutput import format_seconds
from SCDLSlicerLib.panel import PanelMixin

PAPER = ('Su et al., "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image '
         'Segmentation", arXiv 2603.05202, 2026')

#: Milliseconds between two polls of a running child process.
POLL_INTERVAL_MS = 200
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
