"""SCDL Train's panel behaviour: what the widget does with the parameter node, the tables, the check, the run,
the hand-off and the review (no Qt: the module file owns the Qt objects and wires the signals to these methods).

:class:`TrainPanelHandlers` is a base of ``SCDLTrain.SCDLTrainWidget`` (before ``SCDLSlicerLib.panel.PanelMixin``);
it uses ``self.ui`` (the widgets), ``self.logic`` (``SCDLTrainLogic``), ``self.HAND_BOUND`` and ``self.TableItem``.
"""

import logging
import os

import slicer
from slicer.i18n import tr as _

from SCDLSlicerLib import models
from SCDLSlicerLib.childoutput import format_seconds
from SCDLTrainLib import handoff, options, scenecohort, segmentmap, tables


class TrainPanelHandlers:
    """The handlers of SCDL Train's panel (see the module docstring)."""

    #: Parameters whose change re-reads the scene cohort (the cases, their roles, the classes to map onto).
    RESCAN_ON = ("cohortSource", "valFraction", "initModel")

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
            self._modify(**defaults)
        if not node.runsFolder:
            node.runsFolder = str(self.logic.defaultRunsFolder())
        if not node.runName:
            node.runName = self.logic.newRunName()

    def setParameterNode(self, inputParameterNode) -> None:
        self._connectParameterNode(inputParameterNode, self._onParameterNodeModified)
        self._seen = {}
        self._onParameterNodeModified()

    def _modify(self, **values) -> None:
        """Set several parameters with one modified event (the panel's own changes: no preset side effect)."""
        self._updating = True
        try:
            options.set_parameters(self._parameterNode, values)
        finally:
            self._updating = False
        if self._seen:
            self._seen["cpuPreset"] = self._parameterNode.cpuPreset  # set by the panel, not toggled by the user
        self._onParameterNodeModified()

    def _onWidgetEdited(self, name) -> None:
        """A hand-bound widget changed (see :attr:`HAND_BOUND`): its value into the parameter node."""
        if self._parameterNode is None or self._updating:
            return
        widget, (parameter, signal) = getattr(self.ui, name), self.HAND_BOUND[name]
        if signal.startswith("currentIndexChanged"):
            value = widget.itemData(widget.currentIndex) if 0 <= widget.currentIndex < widget.count() else None
        else:
            value = {"directoryChanged(QString)": lambda: widget.directory, "textChanged()": widget.toPlainText,
                     "currentPathChanged(QString)": lambda: widget.currentPath}[signal]()
        if value is not None and getattr(self._parameterNode, parameter) != str(value):
            setattr(self._parameterNode, parameter, str(value))

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Any change of the panel state: its side effects (the CPU preset sets iterations and patch; the source,
        validation share and initial model re-read the scene cohort), then the widgets, estimate and buttons."""
        node = self._parameterNode
        if self._updating:
            return
        if node is None or self.ui is None:
            self._updateButtons()
            return
        now = {name: getattr(node, name) for name in ("cpuPreset", *self.RESCAN_ON)}
        before, self._seen = self._seen, now
        if before and now["cpuPreset"] != before["cpuPreset"]:   # the user toggled the preset
            iterations, patch = self.logic.presetDefaults(self.logic.presetName(node.cpuPreset))
            self._modify(iterations=iterations, patchSize=0 if node.initModel else patch)  # 0: the model's own patch
            return
        if before and any(now[name] != before[name] for name in self.RESCAN_ON):
            self.refreshSceneCohort()
        self._updateGui()

    def _updateGui(self) -> None:
        """Parameter node -> the hand-bound widgets (signals blocked), then the estimate and the buttons."""
        node, ui = self._parameterNode, self.ui
        self._updating = True
        try:
            for name, (parameter, signal) in self.HAND_BOUND.items():
                widget, value = getattr(ui, name), getattr(node, parameter)
                wasBlocked = widget.blockSignals(True)
                if signal.startswith("currentIndexChanged"):
                    self._selectData(widget, value)
                elif signal == "textChanged()":
                    if widget.toPlainText() != value:
                        widget.setPlainText(value)
                elif getattr(widget, "directory" if signal.startswith("directory") else "currentPath") != value:
                    setattr(widget, "directory" if signal.startswith("directory") else "currentPath", value)
                widget.blockSignals(wasBlocked)
            ui.sceneCohortWidget.visible = node.cohortSource == "scene"
            ui.foldersCohortWidget.visible = node.cohortSource == "folders"
            ui.manifestCohortWidget.visible = node.cohortSource == "manifest"
            ui.scdlWeightSpinBox.enabled = options.uses_scdl(node.framework)
            ui.unlabeledBatchSpinBox.enabled = options.uses_unlabeled(node.framework)
        finally:
            self._updating = False
        self._updateEstimate()
        self._updateButtons()

    # -- models and devices -----------------------------------------------------------------------
    def refreshModels(self) -> None:
        """Fill the initial-model selector: "from scratch" and every installed model."""
        try:
            self._models = [m for m in self.logic.listModels() if m.get("installed")]
        except Exception as err:  # noqa: BLE001 - the panel must open even if the core cannot be imported
            self._models = []
            self.ui.modelCardBrowser.setHtml("<p>" + _("Cannot read the model catalog: {error}").format(error=err) + "</p>")
        self._fillCombo(self.ui.initModelSelector, [(_("(none: train from scratch, Synapse classes)"), "")] + [
            (models.model_label(m), m["id"]) for m in self._models])
        if self._parameterNode is not None:
            self._selectData(self.ui.initModelSelector, self._parameterNode.initModel)

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
        self.ui.cohortCountsLabel.text = tables.scene_counts_text(self._cases)
        self._updateButtons()

    def _fillCohortTable(self) -> None:
        checked = getattr(self, "_checkedAnnotation", None)
        self._fillTable(self.ui.cohortTable, tables.cohort_rows(self._cases, self._matches, self._n_classes, checked),
                        self.ui.cohortTableGroupBox)

    def _fillMappingTable(self) -> None:
        self._fillTable(self.ui.mappingTable, tables.mapping_rows(self._matches), self.ui.mappingGroupBox)

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
        node.segmentMapping = segmentmap.overrides_to_json(overrides)
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
            partial = bool(getattr(self, "_checkedAnnotation", None)) or (
                self._parameterNode.cohortSource == "scene" and tables.scene_is_partial(
                    getattr(self, "_cases", []) or [], getattr(self, "_matches", []) or [],
                    getattr(self, "_n_classes", 0)))
            self.ui.estimateLabel.text = self.logic.estimate(opts, partial).text()
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
        self._checkedAnnotation = None
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
            except Exception as err:
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
        self._showCheckedAnnotation(result)
        self.ui.cohortCountsLabel.text = tables.check_text(result, problems, self._checkIsCurrent())

    def _showCheckedAnnotation(self, result) -> None:
        """Per case, which classes it annotates and which the initial model keeps: in the cohort table (scene)
        and in the log; the run's plan (preset, iterations, estimate) in the log."""
        self._checkedAnnotation = tables.checked_annotation(result.annotation, self._export)
        if self._parameterNode.cohortSource == "scene" and self._cases:
            self._fillCohortTable()
        for name, text in self._checkedAnnotation.items():
            self._appendLog(f"{name}: {text}")
        if result.plan.get("text"):
            self._appendLog(result.plan["text"])

    def _setProblems(self, problems) -> None:
        self._fillTable(self.ui.problemsTable, tables.problem_rows(problems), self.ui.problemsGroupBox)

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
        if node.runsFolder and node.runName.strip():
            candidates.append(os.path.join(node.runsFolder, node.runName.strip()))
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

    def _finishTrain(self, job) -> None:
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

    def _finishRegister(self, job) -> None:
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
        """The registered model's card, after a fine-tune with the validation Dice per organ before and after."""
        item, card = self.logic.modelCard(modelId)
        if item is None:
            self.ui.modelCardBrowser.setHtml("")
            return
        rows, before, after = self.logic.beforeAfter(card)
        self.ui.modelCardBrowser.setHtml(tables.before_after_html(rows, before, after) + models.card_html(item, card))

    def onShowCurves(self) -> None:
        if self._curves is None:
            return
        try:
            self.logic.showChart(self._curves.loss_chart)
        except AttributeError:  # no Plots module (tests, a custom Slicer without it): the nodes are still there
            pass

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
    def _taskFinishers(self) -> dict:
        """Task kind -> the method that finishes it (``SCDLSlicerLib.panel.PanelMixin.onPollTimer``)."""
        return {"check": self._finishCheck, "train": self._finishTrain, "register": self._finishRegister,
                "review": self._finishReview}

    def _showProgress(self, kind, job, lines) -> None:
        described = self.logic.describedEvents()      # the event kinds the log shows as a sentence
        for line in lines if kind != "review" else ():
            if line.kind in ("warning", "error", "message", "cancelled", "log"):
                self._appendLog(line.text if line.kind == "log" else f"{line.kind}: {line.text}")
            elif line.kind == "event" and line.event_kind in described:
                self._appendLog(self.logic.describeEvent(line.data))
        if kind == "train":
            self.ui.progressBar.value = int(job.monitor.percent)
            if not job.cancelled:
                self.ui.statusLabel.text = job.monitor.status_text()
            if job.monitor.take_changed():
                self.logic.updateCurves(self._curves, job.monitor)
        elif kind == "review":
            self.ui.progressBar.value = int(job.percent)

    def _error(self, text) -> None:
        self._showError(text, _("SCDL Train"))
