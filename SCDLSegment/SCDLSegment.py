"""SCDLSegment: abdominal CT organ segmentation with SCDL models, in 3D Slicer: the module descriptor and the
widget (GUI wiring). Logic and parameter node: ``SCDLSegmentLib.logic``; self-test: ``SCDLSegmentLib.selftest``;
shared with SCDLTrain: ``SCDLSlicerLib``. The segmentation runs in a child process (``PythonSlicer -m scdl segment``);
nothing heavy is imported at module load."""

import logging

import qt

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

# SCDLSegmentLib first: in a developer checkout it makes SCDLSlicerLib importable.
from SCDLSegmentLib import SUBMODULES, results
from SCDLSegmentLib.logic import SCDLSegmentLogic, SCDLSegmentParameterNode, findCtInputs  # noqa: F401 - the module's API
from SCDLSegmentLib.selftest import SCDLSegmentTest  # noqa: F401 - Slicer finds the self-test in the module file
from SCDLSlicerLib import devices, models, scenejob
from SCDLSlicerLib.panel import PanelMixin

PAPER = ('Su et al., "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image '
         'Segmentation", arXiv 2603.05202, 2026')

#: Milliseconds between two polls of a running child process.
POLL_INTERVAL_MS = 100



class SCDLSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SCDL Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []  # PyTorch is an extension dependency, checked when needed
        self.parent.contributors = ["SCDL extension contributors"]
        self.parent.helpText = _(
            "Segment abdominal organs (spleen, kidneys, liver, pancreas, adrenal glands, vessels ...) in a CT "
            "with an SCDL model: the bundled default model, models trained with SCDLTrain, imported or "
            "downloaded ones. The result is a segmentation with standard (SNOMED CT) terminology, ready for "
            "the Segment Editor and DICOM SEG export. Inference runs in a separate process on the CPU or a GPU."
            "<p>Method: {paper}.</p>"
            "<p>Research software, not for clinical use.</p>"
        ).format(paper=PAPER)
        self.parent.acknowledgementText = _(
            "SCDL (Semantic Class Distribution Learning) was proposed by {paper}. This extension re-implements the "
            "method; it uses MONAI, PyTorch, SimpleITK and slicerio."
        ).format(paper=PAPER)



class SCDLSegmentWidget(PanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI glue: widgets <-> parameter node (``inputVolume``, ``outputSegmentation`` and ``computeUncertainty`` bound
    by ``SlicerParameterName`` in the .ui; the model and device combos here), and the running child (the parts
    shared with SCDLTrain are in ``SCDLSlicerLib.panel``)."""

    HELPER_PACKAGE = "SCDLSegmentLib"
    HELPER_SUBMODULES = SUBMODULES
    TableItem = qt.QTableWidgetItem

    def __init__(self, parent=None) -> None:
        # State first: without a parent the base class calls setup() from its __init__. The base class also
        # initialises VTKObservationMixin (cooperative super().__init__), so it is not re-initialised here.
        self.logic = self.ui = self._parameterNode = self._parameterNodeGuiTag = self._timer = None
        self._models, self._devices = [], []
        self._task = None  # (kind, job) of the running child, kind in "segment", "batch", "models"
        ScriptedLoadableModuleWidget.__init__(self, parent)

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SCDLSegment.ui"))
        self.layout.addWidget(uiWidget)
        ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.connectUi(ui, SCDLSegmentLogic())

    def connectUi(self, ui, logic) -> None:
        """Wire the widgets (from the .ui file, or a stand-in in tests) to the handlers."""
        self._attach(ui, logic, qt.QTimer(), POLL_INTERVAL_MS)
        for widget, signal, slot in (
                (ui.applyButton, "clicked(bool)", self.onApplyButton),
                (ui.modelSelector, "currentIndexChanged(int)", self.onModelSelected),
                (ui.refreshModelsButton, "clicked()", self.refreshModels),
                (ui.modelCardGroupBox, "toggled(bool)", self.onModelCardToggled),
                (ui.deviceSelector, "currentIndexChanged(int)", self.onDeviceSelected),
                (ui.detectGpusButton, "clicked()", self.onDetectGpus),
                (ui.batchApplyButton, "clicked(bool)", self.onBatchApplyButton),
                (ui.batchSourceSelector, "currentIndexChanged(int)", self.onBatchSourceChanged),
                (ui.openCacheButton, "clicked()", self.onOpenCacheFolder),
                (ui.clearCacheButton, "clicked()", self.onClearCache),
                (ui.importModelButton, "clicked()", self.onImportModel),
                (ui.downloadModelButton, "clicked()", self.onDownloadModel),
                (ui.installDependenciesButton, "clicked()", self.onInstallDependencies)):
            widget.connect(signal, slot)
        self.refreshDevices(probe=False)
        self.refreshModels()
        self.updateDependencyStatus()
        self.onBatchSourceChanged(0)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._task is not None:
            self._task[1].cancel()
        self._detach()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode(self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None and self._task[0] == "segment":
            self._task[1].cancel()  # its result would land in the next scene
        self.setParameterNode(None)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        self._connectParameterNode(inputParameterNode, self._updateButtons)
        if self._parameterNode:
            self._selectModel(self._parameterNode.modelId)
            self._selectDevice(self._parameterNode.device)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if self._task is not None:
            self.ui.applyButton.enabled = self._task[0] == "segment"  # it is the Cancel button now
            return
        model = self._currentModel()
        installed = model is None or bool(model.get("installed"))  # None: a package path set by a script
        self.ui.applyButton.enabled = bool(node and node.inputVolume and node.modelId and installed)
        self.ui.applyButton.text = _("Apply")
        self.ui.applyButton.toolTip = (
            _("The selected model is not installed: download or import it first (Models section).")
            if node and node.modelId and not installed else
            _("Segment the input volume (runs in a separate process; click again to cancel)."))

    # -- models and devices -------------------------------------------------------------------------
    def refreshModels(self) -> None:
        """Fill the model selector from the catalog (bundled, trained, imported, downloadable models)."""
        previous = self._parameterNode.modelId if self._parameterNode else None
        try:
            self._models = self.logic.listModels()
            self.ui.cacheFolderLabel.text = _("Model cache: {folder}").format(folder=self.logic.modelCacheFolder())
        except Exception as err:  # noqa: BLE001 - the panel must open even if the core cannot be imported
            self._models = []
            self.ui.modelCardBrowser.setHtml("<p>" + _("Cannot read the model catalog: {error}").format(error=err) + "</p>")
        self._fillCombo(self.ui.modelSelector,
                        [(models.model_label(m), m["id"], models.card_tooltip(m)) for m in self._models])
        self._selectModel(models.choose_initial_model(self._models, previous))

    def _selectModel(self, modelId) -> None:
        if self._selectData(self.ui.modelSelector, modelId):
            self.onModelSelected(self.ui.modelSelector.currentIndex)
        elif modelId:  # a package path typed in by a script: keep it
            self._showModelCard(None)

    def onModelSelected(self, index) -> None:
        model = self._models[index] if 0 <= index < len(self._models) else None
        if self._parameterNode and model is not None and self._parameterNode.modelId != model["id"]:
            self._parameterNode.modelId = model["id"]
        self._showModelCard(model)

    def _showModelCard(self, model) -> None:
        card = models.load_card(model) if model is not None else {}
        self.ui.modelSelector.toolTip = models.card_tooltip(model, card) if model is not None else ""
        self.ui.modelCardBrowser.setHtml(models.card_html(model, card) if model is not None else "")
        self.ui.downloadModelButton.enabled = model is not None and model.get("kind") == "checkpoints"

    def onModelCardToggled(self, checked) -> None:
        self._showModelCard(self._currentModel())

    def _currentModel(self):
        modelId = self._parameterNode.modelId if self._parameterNode else None
        return next((m for m in self._models if m["id"] == modelId), None)

    def onDeviceSelected(self, index) -> None:
        super().onDeviceSelected(index)
        if self._parameterNode and 0 <= index < len(self._devices):
            self.ui.deviceInfoLabel.text = self.logic.checkDevice(self._parameterNode.device) or ""

    def onDetectGpus(self) -> None:
        self.refreshDevices(probe=True)
        self.ui.deviceInfoLabel.text = devices.gpu_report([value for value, _label in self._devices], _("segmentation"))

    def ensureDependencies(self) -> bool:
        """Ask once (listing everything) and install what is missing; False if the user declined or it failed."""
        return self._ensureDependencies(_("Python packages are needed before segmenting (see Python dependencies)."))

    # -- segmentation -----------------------------------------------------------------------------
    def onApplyButton(self, checked=False) -> None:
        """Apply starts a segmentation; while it runs the same button cancels it."""
        if self._task is not None:
            if self._task[0] == "segment":
                self._cancelTask()
            return
        node = self._parameterNode
        if not self.ensureDependencies():
            return
        self.ui.deviceInfoLabel.text = self.logic.checkDevice(node.device) or self.ui.deviceInfoLabel.text
        self.ui.progressBar.value = 0
        self.ui.logTextEdit.clear()
        self._fillTable(self.ui.confidenceTable, [], self.ui.confidenceGroupBox)
        try:
            run = self.logic.startSegmentation(node.inputVolume, node.modelId or None, node.device,
                                               node.outputSegmentation, node.computeUncertainty)
        except Exception as err:  # noqa: BLE001 - e.g. the volume cannot be written
            self._error(_("Could not start the segmentation: {error}").format(error=err))
            return
        inputWarnings = self.logic.checkInput(node.inputVolume)
        for warning in inputWarnings:
            self._appendLog("warning: " + warning)
        self.ui.warningsLabel.text = "\n".join(inputWarnings)
        self._startTask("segment", run)
        self.ui.applyButton.text = _("Cancel")
        self.ui.applyButton.toolTip = _("Stop the segmentation (nothing is added to the scene).")
        self.ui.statusLabel.text = _("Starting...")

    def _cancelTask(self) -> None:
        self._task[1].cancel()
        self._statusLabelFor(self._task[0]).text = _("Cancelling...")

    def _statusLabelFor(self, kind):
        return getattr(self.ui, {"segment": "statusLabel", "batch": "batchStatusLabel", "models": "modelsStatusLabel"}[kind])

    def _showProgress(self, kind, job, lines) -> None:
        for entry in lines:
            item, line = entry if kind == "batch" else (None, entry)  # a batch hands out (item, line)
            if line.kind != "progress":
                text = line.text if line.kind == "log" else f"{line.kind}: {line.text}"
                self._appendLog(f"[{item.label}] {line.text}" if item is not None else text)
        if kind == "batch":
            self.ui.batchProgressBar.value = int(job.percent)
            if job.job is not None:
                self.ui.batchStatusLabel.text = _("{index}/{count}: {name} - {status}").format(
                    index=job.index + 1, count=len(job.items), name=job.items[job.index].label,
                    status=job.job.tracker.status_text())
            return
        (self.ui.progressBar if kind == "segment" else self.ui.modelsProgressBar).value = int(job.tracker.percent)
        self._statusLabelFor(kind).text = job.tracker.status_text()

    def _finishSegment(self, run) -> None:
        try:
            result = self.logic.finishSegmentation(run)
        except Exception as err:  # noqa: BLE001 - the child's error, or an unexpected scene problem: one message
            if not isinstance(err, scenejob.SegmentationFailed):
                logging.exception("SCDLSegment: loading the result failed")
                err = _("Loading the result failed: {error}").format(error=err)
            self.ui.statusLabel.text = _("Failed.")
            self._error(str(err))
            return
        if result is None:
            self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
            self.ui.progressBar.value = 0
            return
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text, self.ui.warningsLabel.text = results.summary(result)
        self.ui.confidenceTable.setHorizontalHeaderLabels([_("Organ"), results.result_column_title(result.confidence)])
        self._fillTable(self.ui.confidenceTable, results.rows_of(result), self.ui.confidenceGroupBox)

    def _error(self, text) -> None:
        self._showError(text, _("SCDL Segment"))

    # -- batch ------------------------------------------------------------------------------------
    def onBatchSourceChanged(self, index) -> None:
        self.ui.batchInputDirectoryButton.enabled = index == 1

    def onBatchApplyButton(self, checked=False) -> None:
        if self._task is not None:
            if self._task[0] == "batch":
                self._cancelTask()
            return
        outputFolder = self.ui.batchOutputDirectoryButton.directory
        if not outputFolder:
            self._error(_("Choose an output folder for the batch."))
            return
        if not self.ensureDependencies():
            return
        node, fromFolder = self._parameterNode, self.ui.batchSourceSelector.currentIndex == 1
        try:
            batch = self.logic.startBatch(outputFolder, node.modelId or None, node.device,
                                          self.ui.batchInputDirectoryButton.directory if fromFolder else None)
        except (ValueError, OSError) as err:
            self._error(str(err))
            return
        self.ui.logTextEdit.clear()
        self.ui.batchProgressBar.value = 0
        self._startTask("batch", batch)
        self.ui.batchApplyButton.text = _("Cancel batch")

    def _finishBatch(self, batch) -> None:
        self.ui.batchApplyButton.text = _("Segment all")
        self.ui.batchProgressBar.value = int(batch.percent)
        self.ui.batchStatusLabel.text = batch.summary()
        for item in batch.items:
            line = f"{item.label}: {item.status}" + (f" ({item.message})" if item.message else "")
            self._appendLog(line + "".join(f"\n  warning: {w}" for w in item.warnings))

    # -- models -------------------------------------------------------------------------------------
    def onOpenCacheFolder(self) -> None:
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.logic.modelCacheFolder())))

    def onClearCache(self) -> None:
        if slicer.util.confirmOkCancelDisplay(_("Delete the downloaded and imported model packages in {folder}? "
                                                "Bundled models stay.").format(folder=self.logic.modelCacheFolder())):
            removed, kept = self.logic.clearModelCache()
            self.ui.modelsStatusLabel.text = _("Removed {removed} item(s); left {kept} other file(s) alone.").format(
                removed=len(removed), kept=len(kept))
            self.refreshModels()

    def onImportModel(self) -> None:
        if self._task is not None:
            return
        path = qt.QFileDialog.getOpenFileName(
            None, _("Import SCDL model"), "", _("SCDL model package (*.scdlmodel manifest.json card.json);;All files (*)"))
        if path and self.ensureDependencies():
            self._startModelsJob(self.logic.startModelImport(path), _("Importing and verifying {path}...").format(path=path))

    def onDownloadModel(self) -> None:
        if self._task is not None:
            return
        model = self._currentModel()
        if model is None or model.get("kind") != "checkpoints":
            self._error(_("Select a downloadable catalog model first."))
            return
        if (slicer.util.confirmOkCancelDisplay(self.logic.downloadConsent(model), windowTitle=_("SCDL: download model"))
                and self.ensureDependencies()):
            self._startModelsJob(self.logic.startModelDownload(model["id"]), _("Downloading {id}...").format(id=model["id"]))

    def _startModelsJob(self, job, text) -> None:
        self.ui.modelsProgressBar.value = 0
        self.ui.modelsStatusLabel.text = text
        self._startTask("models", job)

    def _finishModels(self, job) -> None:
        message = job.error_message()
        if message:
            self.ui.modelsStatusLabel.text = _("Failed.")
            self._error(message)
            return
        self.ui.modelsProgressBar.value = 100
        self.ui.modelsStatusLabel.text = _("Cancelled.") if job.cancelled else _("Done.")
        self.refreshModels()
