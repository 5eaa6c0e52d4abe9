"""SCDL Segment's panel behaviour: models and devices, segmentation, results, batch, model cache (no Qt: the
module file owns the Qt objects and wires the signals to these methods).

:class:`SegmentPanelHandlers` is a base of ``SCDLSegment.SCDLSegmentWidget`` (before
``SCDLSlicerLib.panel.PanelMixin``); it uses ``self.ui`` (the widgets) and ``self.logic`` (``SCDLSegmentLogic``).
"""

import logging

import slicer
from slicer.i18n import tr as _

from SCDLSegmentLib import results
from SCDLSlicerLib import devices, models, scenejob


class SegmentPanelHandlers:
    """The handlers of SCDL Segment's panel (see the module docstring)."""

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

    def _taskFinishers(self) -> dict:
        """Task kind -> the method that finishes it (``SCDLSlicerLib.panel.PanelMixin.onPollTimer``)."""
        return {"segment": self._finishSegment, "batch": self._finishBatch, "models": self._finishModels}

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
        except Exception as err:
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
        self.ui.batchDicomSegCheckBox.enabled = index == 1        # DICOM SEG needs the source series' files

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
                                          self.ui.batchInputDirectoryButton.directory if fromFolder else None,
                                          dicomSeg=fromFolder and bool(self.ui.batchDicomSegCheckBox.checked))
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
    def onClearCache(self) -> None:
        if slicer.util.confirmOkCancelDisplay(_("Delete the downloaded and imported model packages in {folder}? "
                                                "Bundled models stay.").format(folder=self.logic.modelCacheFolder())):
            removed, kept = self.logic.clearModelCache()
            self.ui.modelsStatusLabel.text = _("Removed {removed} item(s); left {kept} other file(s) alone.").format(
                removed=len(removed), kept=len(kept))
            self.refreshModels()

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
