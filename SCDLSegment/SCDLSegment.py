"""SCDLSegment: abdominal CT organ segmentation with SCDL models, in 3D Slicer.

The segmentation runs in a child process (``PythonSlicer -m scdl segment ... --progress json``), never in
Slicer's GUI thread; the Logic is Qt-free and drives it through the shared ``SCDLSlicerLib`` (start / poll / cancel).
Nothing heavy is imported at module load: torch, SimpleITK and the core package are used in the child, or
imported inside functions.
"""

import logging
import os
import re
import shutil
import tempfile

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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

from SCDLSegmentLib import SUBMODULES  # first: in a developer checkout it makes SCDLSlicerLib importable
from SCDLSegmentLib import results
from SCDLSlicerLib import commands, devices, jobs, models, sceneio, scenejob
from SCDLSlicerLib import dependencies as deps
from SCDLSlicerLib.panel import PanelMixin

PAPER = ('Su et al., "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image '
         'Segmentation", arXiv 2603.05202, 2026')

#: Milliseconds between two polls of a running child process.
POLL_INTERVAL_MS = 100

#: CT file types a batch folder run picks up (DICOM series are found by content).
BATCH_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Words in a file name that mark a label map next to the CTs (not segmented; case-insensitive, the name is
#: split at every non-alphanumeric character: "example_seg_fast.nii.gz" -> example, seg, fast).
BATCH_SKIP_WORDS = ("seg", "segmentation", "label", "labels", "labelmap", "mask")
#: Files never opened when looking for DICOM series.
NOT_DICOM_EXTENSIONS = (".txt", ".json", ".csv", ".md", ".xml", ".py", ".png", ".jpg", ".jpeg", ".pdf", ".zip", ".gz", ".raw")


#
# SCDLSegment
#


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


#
# SCDLSegmentParameterNode
#


@parameterNodeWrapper
class SCDLSegmentParameterNode:
    """State of the module panel (saved with the scene).

    inputVolume - the CT to segment.
    outputSegmentation - segmentation to overwrite; None creates a new one.
    modelId - model id (from the catalog) or package path given to ``--model``.
    device - ``auto``, ``cpu`` or ``cuda:N``.
    computeUncertainty - also compute the uncertainty map and per-organ confidence.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelId: str = ""
    device: str = "auto"
    computeUncertainty: bool = False


#
# SCDLSegmentWidget
#


class SCDLSegmentWidget(PanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI glue: widgets <-> parameter node, and a timer that polls the running job (the parts shared with
    SCDLTrain are in ``SCDLSlicerLib.panel``)."""

    HELPER_PACKAGE = "SCDLSegmentLib"
    HELPER_SUBMODULES = SUBMODULES

    def __init__(self, parent=None) -> None:
        # State first: without a parent the base class calls setup() from its __init__. The base class also
        # initialises VTKObservationMixin (cooperative super().__init__), so it is not re-initialised here.
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models = []
        self._devices = []
        self._task = None  # (kind, job) of the running child, kind in "segment", "batch", "models"
        self._timer = None
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

        ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        ui.refreshModelsButton.connect("clicked()", self.refreshModels)
        ui.modelCardGroupBox.connect("toggled(bool)", self.onModelCardToggled)
        ui.deviceSelector.connect("currentIndexChanged(int)", self.onDeviceSelected)
        ui.detectGpusButton.connect("clicked()", self.onDetectGpus)
        ui.batchApplyButton.connect("clicked(bool)", self.onBatchApplyButton)
        ui.batchSourceSelector.connect("currentIndexChanged(int)", self.onBatchSourceChanged)
        ui.openCacheButton.connect("clicked()", self.onOpenCacheFolder)
        ui.clearCacheButton.connect("clicked()", self.onClearCache)
        ui.importModelButton.connect("clicked()", self.onImportModel)
        ui.downloadModelButton.connect("clicked()", self.onDownloadModel)
        ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)

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
        self._disconnectParameterNode(self._checkCanApply)

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
        self._connectParameterNode(inputParameterNode, self._checkCanApply)
        if self._parameterNode:
            self._selectModel(self._parameterNode.modelId)
            self._selectDevice(self._parameterNode.device)
        self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        busy = self._task is not None
        node = self._parameterNode
        if busy:
            self.ui.applyButton.enabled = self._task[0] == "segment"  # it is the Cancel button now
            return
        model = self._currentModel()
        installed = model is None or bool(model.get("installed"))  # None: a package path set by a script
        self.ui.applyButton.enabled = bool(node and node.inputVolume and node.modelId and installed)
        self.ui.applyButton.text = _("Apply")
        if node and node.modelId and not installed:
            self.ui.applyButton.toolTip = _("The selected model is not installed: download or import it first (Models section).")
        else:
            self.ui.applyButton.toolTip = _("Segment the input volume (runs in a separate process; click again to cancel).")

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
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        for index, model in enumerate(self._models):
            self.ui.modelSelector.addItem(models.model_label(model), model["id"])
            self.ui.modelSelector.setItemData(index, models.card_tooltip(model), qt.Qt.ToolTipRole)
        self.ui.modelSelector.blockSignals(wasBlocked)
        self._selectModel(models.choose_initial_model(self._models, previous))

    def _selectModel(self, modelId) -> None:
        ids = [m["id"] for m in self._models]
        if modelId in ids:
            wasBlocked = self.ui.modelSelector.blockSignals(True)
            self.ui.modelSelector.currentIndex = ids.index(modelId)
            self.ui.modelSelector.blockSignals(wasBlocked)
            self.onModelSelected(ids.index(modelId))
        elif modelId:  # a package path typed in by a script: keep it
            self._showModelCard(None)

    def onModelSelected(self, index) -> None:
        model = self._models[index] if 0 <= index < len(self._models) else None
        if self._parameterNode and model is not None and self._parameterNode.modelId != model["id"]:
            self._parameterNode.modelId = model["id"]
        self._showModelCard(model)

    def _showModelCard(self, model) -> None:
        if model is None:
            self.ui.modelSelector.toolTip = ""
            self.ui.modelCardBrowser.setHtml("")
            self.ui.downloadModelButton.enabled = False
            return
        card = models.load_card(model)
        self.ui.modelSelector.toolTip = models.card_tooltip(model, card)
        self.ui.modelCardBrowser.setHtml(models.card_html(model, card))
        self.ui.downloadModelButton.enabled = model.get("kind") == "checkpoints"

    def onModelCardToggled(self, checked) -> None:
        self._showModelCard(self._currentModel())

    def _currentModel(self):
        modelId = self._parameterNode.modelId if self._parameterNode else None
        return next((m for m in self._models if m["id"] == modelId), None)

    def refreshDevices(self, probe: bool = False) -> None:
        current = self._parameterNode.device if self._parameterNode else "auto"
        try:
            self._devices = devices.list_devices(probe_gpus=probe)
        except Exception as err:  # noqa: BLE001 - a broken CUDA install must not break the panel
            self._devices = devices.base_devices()
            self.ui.deviceInfoLabel.text = _("GPU detection failed: {error}").format(error=err)
        wasBlocked = self.ui.deviceSelector.blockSignals(True)
        self.ui.deviceSelector.clear()
        for value, label in self._devices:
            self.ui.deviceSelector.addItem(label, value)
        self.ui.deviceSelector.blockSignals(wasBlocked)
        self._selectDevice(current)

    def _selectDevice(self, device) -> None:
        values = [value for value, _label in self._devices]
        if device not in values:  # e.g. "cuda:1" saved in a scene before GPUs were detected
            self._devices.append((device, device))
            self.ui.deviceSelector.addItem(device, device)
            values.append(device)
        wasBlocked = self.ui.deviceSelector.blockSignals(True)
        self.ui.deviceSelector.currentIndex = values.index(device)
        self.ui.deviceSelector.blockSignals(wasBlocked)

    def onDeviceSelected(self, index) -> None:
        if self._parameterNode and 0 <= index < len(self._devices):
            self._parameterNode.device = self._devices[index][0]
            self.ui.deviceInfoLabel.text = self.logic.checkDevice(self._parameterNode.device) or ""

    def onDetectGpus(self) -> None:
        self.refreshDevices(probe=True)
        gpus = [value for value, _label in self._devices if value.startswith("cuda")]
        if gpus:
            self.ui.deviceInfoLabel.text = "\n".join(devices.describe_gpu(devices.device_index(v)) for v in gpus)
        elif devices.torch_installed():
            self.ui.deviceInfoLabel.text = _("PyTorch sees no GPU: segmentation runs on the CPU.")
        else:
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet (see Python dependencies).")

    # -- dependencies ------------------------------------------------------------------------------
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
        deviceWarning = self.logic.checkDevice(node.device)
        if deviceWarning:
            self.ui.deviceInfoLabel.text = deviceWarning
        self._resetRunDisplay()
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

    def _resetRunDisplay(self) -> None:
        self.ui.progressBar.value = 0
        self.ui.logTextEdit.clear()
        self.ui.warningsLabel.text = ""
        self.ui.confidenceTable.setRowCount(0)
        self.ui.confidenceGroupBox.collapsed = True

    def _startTask(self, kind, job) -> None:
        self._task = (kind, job)
        self._timer.start()
        self._checkCanApply()

    def _cancelTask(self) -> None:
        kind, job = self._task
        job.cancel()
        self._statusLabelFor(kind).text = _("Cancelling...")

    def _statusLabelFor(self, kind):
        return {"segment": self.ui.statusLabel, "batch": self.ui.batchStatusLabel, "models": self.ui.modelsStatusLabel}[kind]

    def onPollTimer(self) -> None:
        """Hand the child's new output to the panel; finish the task when the child ended."""
        if self._task is None:
            self._timer.stop()
            return
        kind, job = self._task
        if kind == "batch":
            for item, line in job.poll():
                if line.kind != "progress":
                    self._appendLog(f"[{item.label}] {line.text}")
            self.ui.batchProgressBar.value = int(job.percent)
            if job.job is not None:
                self.ui.batchStatusLabel.text = _("{index}/{count}: {name} - {status}").format(
                    index=job.index + 1, count=len(job.items), name=job.items[job.index].label,
                    status=job.job.tracker.status_text())
        else:
            for line in job.poll():
                if line.kind != "progress":
                    self._appendLog(line.text if line.kind == "log" else f"{line.kind}: {line.text}")
            tracker = job.job.tracker if kind == "segment" else job.tracker
            bar = self.ui.progressBar if kind == "segment" else self.ui.modelsProgressBar
            bar.value = int(tracker.percent)
            self._statusLabelFor(kind).text = tracker.status_text()
        if job.finished:
            self._timer.stop()
            self._task = None
            {"segment": self._finishSegmentation, "batch": self._finishBatch, "models": self._finishModelsJob}[kind](job)
            self._checkCanApply()

    def _finishSegmentation(self, run) -> None:
        try:
            result = self.logic.finishSegmentation(run)
        except scenejob.SegmentationFailed as err:
            self.ui.statusLabel.text = _("Failed.")
            self._error(str(err))
            return
        except Exception as err:  # noqa: BLE001 - an unexpected scene problem still ends in one message
            logging.exception("SCDLSegment: loading the result failed")
            self.ui.statusLabel.text = _("Failed.")
            self._error(_("Loading the result failed: {error}").format(error=err))
            return
        if result is None:
            self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
            self.ui.progressBar.value = 0
            return
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text = _("Done in {seconds:.1f} s: {count} segments in '{name}'.").format(
            seconds=result.seconds, count=result.segmentation_node.GetSegmentation().GetNumberOfSegments(),
            name=result.segmentation_node.GetName())
        notFound = result.report.missing if result.report else []
        self.ui.warningsLabel.text = "\n".join(
            result.warnings + ([_("Not found: {organs}.").format(organs=", ".join(notFound))] if notFound else []))
        self._showResults(result)

    def _showResults(self, result) -> None:
        """One row per organ of the model: its confidence (or "found"), or "not found" (no segment)."""
        if result.report is not None:
            rows = results.organ_rows(result.report, result.confidence)
        else:  # a package path without a label table: what the child reported
            rows = [(name, _("not found") if value is None else f"{value:.3f}") for name, value in result.confidence.items()]
        table = self.ui.confidenceTable
        table.setHorizontalHeaderLabels([_("Organ"), results.result_column_title(result.confidence)])
        table.setRowCount(len(rows))
        for row, (name, text) in enumerate(rows):
            table.setItem(row, 0, qt.QTableWidgetItem(name))
            table.setItem(row, 1, qt.QTableWidgetItem(text))
        self.ui.confidenceGroupBox.collapsed = len(rows) == 0

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
        node = self._parameterNode
        try:
            if self.ui.batchSourceSelector.currentIndex == 1:
                batch = self.logic.startBatchFromFolder(self.ui.batchInputDirectoryButton.directory, outputFolder,
                                                        node.modelId or None, node.device)
            else:
                batch = self.logic.startBatchFromScene(outputFolder, node.modelId or None, node.device)
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
        folder = self.logic.modelCacheFolder()
        if not slicer.util.confirmOkCancelDisplay(
                _("Delete the downloaded and imported model packages in {folder}? Bundled models stay.").format(folder=folder)):
            return
        removed, kept = self.logic.clearModelCache()
        self.ui.modelsStatusLabel.text = _("Removed {removed} item(s); left {kept} other file(s) alone.").format(
            removed=len(removed), kept=len(kept))
        self.refreshModels()

    def onImportModel(self) -> None:
        if self._task is not None:
            return
        path = qt.QFileDialog.getOpenFileName(
            None, _("Import SCDL model"), "", _("SCDL model package (*.scdlmodel manifest.json card.json);;All files (*)"))
        if not path:
            return
        if not self.ensureDependencies():
            return
        self._startModelsJob(self.logic.startModelImport(path), _("Importing and verifying {path}...").format(path=path))

    def onDownloadModel(self) -> None:
        if self._task is not None:
            return
        model = self._currentModel()
        if model is None or model.get("kind") != "checkpoints":
            self._error(_("Select a downloadable catalog model first."))
            return
        card = models.load_card(model)
        licence = card.get("licence") or model.get("licence") or _("not stated")
        consent = _(
            "Download '{title}' ({id}) from the internet into {folder}?\n\nLicence: {licence}\n\nThe files are checked "
            "against the catalog's checksums before use."
        ).format(title=model.get("title"), id=model["id"], folder=self.logic.modelCacheFolder(), licence=licence)
        if not slicer.util.confirmOkCancelDisplay(consent, windowTitle=_("SCDL: download model")):
            return
        if not self.ensureDependencies():
            return
        self._startModelsJob(self.logic.startModelDownload(model["id"]), _("Downloading {id}...").format(id=model["id"]))

    def _startModelsJob(self, job, text) -> None:
        self.ui.modelsProgressBar.value = 0
        self.ui.modelsStatusLabel.text = text
        self._startTask("models", job)

    def _finishModelsJob(self, job) -> None:
        message = job.error_message()
        if message:
            self.ui.modelsStatusLabel.text = _("Failed.")
            self._error(message)
            return
        self.ui.modelsProgressBar.value = 100
        self.ui.modelsStatusLabel.text = _("Cancelled.") if job.cancelled else _("Done.")
        self.refreshModels()


#
# SCDLSegmentLogic
#


class SCDLSegmentLogic(ScriptedLoadableModuleLogic):
    """Scene <-> files and the ``scdl`` child processes; usable from scripts and tests without the GUI.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("SCDLSegment")   # or SCDLSegment.SCDLSegmentLogic()
        result = logic.segment(slicer.util.getNode("CTChest"), device="cpu")
        print(result.segmentation_node.GetName(), result.warnings)
    """

    def __init__(self, backend: str = "auto") -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.backend = backend
        commands.ensure_core_importable()

    def getParameterNode(self):
        return SCDLSegmentParameterNode(super().getParameterNode())

    # -- models ---------------------------------------------------------------------------------
    def listModels(self) -> list:
        return models.list_models()

    def modelCacheFolder(self):
        return models.cache_folder()

    def clearModelCache(self):
        return models.clear_cache()

    def startModelImport(self, path) -> jobs.ModelsJob:
        """``scdl models import PATH`` in a child (verifies every checksum, then copies into the cache)."""
        path = str(path)
        if os.path.basename(path) in ("manifest.json", "card.json"):
            path = os.path.dirname(path)
        return jobs.ModelsJob("import", path, backend=self.backend, what=_("The model import")).start()

    def startModelDownload(self, modelId: str) -> jobs.ModelsJob:
        """``scdl models download ID --progress json`` in a child (verified against the catalog)."""
        return jobs.ModelsJob("download", modelId, "--progress", "json", backend=self.backend,
                              what=_("The model download")).start()

    # -- checks -----------------------------------------------------------------------------------
    def dependencyPlan(self) -> deps.InstallPlan:
        return deps.plan()

    def installDependencies(self, plan: deps.InstallPlan) -> None:
        deps.install(plan)

    def checkInput(self, inputVolume) -> list:
        """Warnings about the input (e.g. not a CT in Hounsfield units)."""
        warning = sceneio.ct_plausibility(inputVolume)
        return [warning] if warning else []

    def checkDevice(self, device: str):
        return devices.check_device(device)

    # -- segmentation -------------------------------------------------------------------------------
    def startSegmentation(self, inputVolume, model=None, device: str = "auto", outputSegmentation=None,
                          uncertainty: bool = False, kill_grace_s=None) -> scenejob.SceneSegmentation:
        """Start segmenting ``inputVolume`` in a child process; drive the returned run with ``poll()`` and
        hand it to :meth:`finishSegmentation` when ``run.finished``."""
        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        labels = models.label_infos(model)
        run = scenejob.SceneSegmentation(inputVolume, model, device or "auto", outputSegmentation, uncertainty,
                                         labels=labels, backend=self.backend, kill_grace_s=kill_grace_s)
        return run.start()

    def finishSegmentation(self, run: scenejob.SceneSegmentation):
        """Load the result of a finished run (None if it was cancelled); raises ``SegmentationFailed``."""
        result = run.finish()
        if result is not None:
            logging.info("SCDLSegment: %s", result.segmentation_node.GetName())
        return result

    def addEmptySegments(self, segmentationNode, model=None) -> list:
        """Add an empty segment (name, colour, terminology) for each organ of ``model`` that ``segmentationNode``
        lacks, to paint a missed organ in the Segment Editor; returns the names added. Only on request: in a
        training case of SCDL Train an empty segment means "annotated, absent", not "not found"."""
        labels = models.label_infos(model)
        if not labels:
            raise ValueError(_("The model has no label table: the organ names are unknown."))
        return sceneio.add_empty_segments(segmentationNode, labels)

    def segment(self, inputVolume, model=None, device: str = "auto", outputSegmentation=None,
                uncertainty: bool = False, timeout=None):
        """Blocking convenience for scripts: start, wait, finish."""
        run = self.startSegmentation(inputVolume, model, device, outputSegmentation, uncertainty)
        return run.wait(timeout)

    # -- batch ------------------------------------------------------------------------------------
    def startBatchFromScene(self, outputFolder, model=None, device: str = "auto", volumes=None) -> jobs.BatchJob:
        """Segment every scalar volume of the scene (or ``volumes``) into ``<outputFolder>/<name>.seg.nrrd``."""
        volumes = sceneio.scene_volumes() if volumes is None else list(volumes)
        if not volumes:
            raise ValueError(_("There is no volume in the scene."))
        outputFolder = _checkedOutputFolder(outputFolder)
        workDir = tempfile.mkdtemp(prefix="SCDLSegmentBatch-", dir=scenejob.work_root())
        items = []
        for volume in volumes:
            name = sceneio.safe_file_stem(volume.GetName())
            items.append(jobs.BatchItem(volume.GetName(), volume.GetID(), _uniquePath(outputFolder, name, items)))

        def makeJob(item):
            volume = slicer.mrmlScene.GetNodeByID(item.source)
            if volume is None:
                raise ValueError(_("the volume was removed from the scene"))
            warning = sceneio.ct_plausibility(volume)
            item.input_file = sceneio.write_volume(volume, os.path.join(workDir, f"{items.index(item)}.nrrd"))
            job = jobs.SegmentJob(item.input_file, item.output, model, device, backend=self.backend)
            if warning:
                job.tracker.warnings.append(warning)
            return job

        def cleanup(item):
            if item.input_file is not None and os.path.exists(item.input_file):
                os.remove(item.input_file)
            if all(i.status in ("done", "failed", "cancelled") for i in items):
                shutil.rmtree(workDir, ignore_errors=True)

        return jobs.BatchJob(items, makeJob, cleanup).start()

    def startBatchFromFolder(self, inputFolder, outputFolder, model=None, device: str = "auto") -> jobs.BatchJob:
        """Segment every CT file / DICOM series folder in ``inputFolder`` into ``<outputFolder>/<name>.seg.nrrd``."""
        inputs = findCtInputs(inputFolder)
        if not inputs:
            raise ValueError(_("No CT files (NIfTI, NRRD, MHA) or DICOM series found in {folder}.").format(folder=inputFolder))
        outputFolder = _checkedOutputFolder(outputFolder)
        items = []
        for path in inputs:
            items.append(jobs.BatchItem(os.path.basename(path), path, _uniquePath(outputFolder, _stem(path), items)))
        return jobs.BatchJob(items, lambda item: jobs.SegmentJob(item.source, item.output, model, device,
                                                                 backend=self.backend)).start()


def _checkedOutputFolder(folder):
    if not folder:
        raise ValueError(_("Choose an output folder."))
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise ValueError(_("Cannot write into {folder}: choose another output folder.").format(folder=folder))
    return folder


def _stem(path) -> str:
    name = os.path.basename(os.path.normpath(path))
    for ext in BATCH_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _uniquePath(folder, stem, items):
    import pathlib

    taken = {item.output for item in items}
    candidate = pathlib.Path(folder) / f"{stem}.seg.nrrd"
    index = 2
    while candidate in taken or candidate.exists():
        candidate = pathlib.Path(folder) / f"{stem}_{index}.seg.nrrd"
        index += 1
    return candidate


def _isDicomFile(path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def findCtInputs(folder) -> list:
    """CT inputs in ``folder``: image files by extension (label maps skipped, see ``BATCH_SKIP_WORDS``) and
    every folder (the input folder included) that holds DICOM files."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        images = []
        hasDicom = False
        for name in sorted(files):
            lower = name.lower()
            ext = next((e for e in BATCH_EXTENSIONS if lower.endswith(e)), None)
            if ext is not None:
                words = set(re.split(r"[^a-z0-9]+", lower[: -len(ext)]))
                if not words & set(BATCH_SKIP_WORDS):
                    images.append(os.path.join(root, name))
            elif not hasDicom and not lower.endswith(NOT_DICOM_EXTENSIONS) and _isDicomFile(os.path.join(root, name)):
                hasDicom = True  # DICOM files have any name ("CT.1.2.840...", "IM0001", "x.dcm"): read the magic
        if hasDicom:
            found.append(root)
        found.extend(images)
    return found


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
        self.assertAlmostEqual(tracker.percent, 15.0 + 70.0 * 3 / 12)  # read + preprocess + 3/12 of infer
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
