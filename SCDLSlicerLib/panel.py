"""Widget glue shared by the SCDLSegment and SCDLTrain panels (no Qt here: the module files own the Qt objects).

``PanelMixin`` goes first in the widget's bases (``class XWidget(PanelMixin, ScriptedLoadableModuleWidget,
VTKObservationMixin)``) and gives both panels the same:

- lifecycle: keep ``ui`` and ``logic``, poll the running child with a timer, follow the scene closing
  (:meth:`_attach` / :meth:`_detach`), bind and unbind the parameter node (:meth:`_connectParameterNode`),
  reload the helper package with the module (:meth:`onReload`);
- Python dependencies: status line, ONE confirmation listing everything, installation
  (:meth:`updateDependencyStatus`, :meth:`_ensureDependencies`, :meth:`onInstallDependencies`);
- the log box and error message boxes (:meth:`_appendLog`, :meth:`_showError`).

The widget provides ``onSceneStartClose``, ``initializeParameterNode``, ``ensureDependencies`` (which calls
:meth:`_ensureDependencies` with its own text), ``_error``, ``_showProgress(kind, job, lines)`` and
``_taskFinishers()``: the table task kind -> the method that finishes it (``{"segment": self._finishSegment}``);
its ``ui`` has ``statusLabel``, ``logTextEdit``, ``dependenciesLabel`` and ``installDependenciesButton``; its
Logic has ``dependencyPlan()`` and ``installDependencies(plan)``.
"""

from __future__ import annotations

import importlib
import logging
import sys

import slicer
from slicer.i18n import tr as _


class PanelMixin:
    """The parts of a module widget that SCDLSegment and SCDLTrain share (see the module docstring)."""

    #: The module's helper package and its submodules in dependency order (reloaded by :meth:`onReload`).
    HELPER_PACKAGE = ""
    HELPER_SUBMODULES: tuple = ()

    # -- lifecycle ------------------------------------------------------------------------------------
    def _attach(self, ui, logic, timer, pollIntervalMs: int) -> None:
        """Keep ``ui`` and ``logic``; ``timer`` (a ``qt.QTimer``) calls ``onPollTimer`` every ``pollIntervalMs``
        while a child runs; the scene's close events reach ``onSceneStartClose`` / ``onSceneEndClose``."""
        self.ui = ui
        self.logic = logic
        self._timer = timer
        self._timer.setInterval(pollIntervalMs)
        self._timer.connect("timeout()", self.onPollTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def _detach(self) -> None:
        """Stop observing and polling (``cleanup``, after the running child was dealt with)."""
        self.removeObservers()
        if self._timer is not None:
            self._timer.stop()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent is not None and self.parent.isEntered:
            self.initializeParameterNode()

    def _disconnectParameterNode(self, onModified) -> None:
        """Unbind the widgets from the current parameter node and stop observing it with ``onModified``."""
        import vtk

        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, onModified)

    def _connectParameterNode(self, node, onModified) -> None:
        """Make ``node`` (or None) the panel's parameter node: widgets bound, ``onModified`` on every change."""
        import vtk

        self._disconnectParameterNode(onModified)
        self._parameterNode = node
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, onModified)

    def onReload(self) -> None:
        """Reload the shared library and the module's helper package too (Slicer's Reload only re-reads the
        module file), bottom layer first."""
        from SCDLSlicerLib import SUBMODULES

        for package, names in (("SCDLSlicerLib", SUBMODULES), (self.HELPER_PACKAGE, self.HELPER_SUBMODULES)):
            for name in names:
                module = sys.modules.get(f"{package}.{name}")
                if module is not None:
                    importlib.reload(module)
        super().onReload()

    # -- running children -----------------------------------------------------------------------------
    def _startTask(self, kind: str, job) -> None:
        """Poll ``job`` until it ends; then its finisher (``_taskFinishers()[kind]``, e.g. ``_finishSegment``) and
        ``_updateButtons``."""
        self._task = (kind, job)
        self._timer.start()
        self._updateButtons()

    def onPollTimer(self) -> None:
        """Hand the child's new output to ``_showProgress(kind, job, lines)``; finish the task when it ended."""
        if self._task is None:
            self._timer.stop()
            return
        kind, job = self._task
        self._showProgress(kind, job, job.poll())
        if job.finished:
            self._timer.stop()
            self._task = None
            self._taskFinishers()[kind](job)
            self._updateButtons()

    # -- combo boxes, devices, tables -----------------------------------------------------------------
    #: ``Qt.ToolTipRole`` (item tooltips of a combo box).
    TOOLTIP_ROLE = 3

    def _fillCombo(self, combo, items) -> None:
        """Replace the items of ``combo`` by ``(text, data)`` or ``(text, data, tooltip)``, signals blocked."""
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for index, item in enumerate(items):
            combo.addItem(item[0], item[1])
            if len(item) > 2:
                combo.setItemData(index, item[2], self.TOOLTIP_ROLE)
        combo.blockSignals(wasBlocked)

    @staticmethod
    def _selectData(combo, data) -> bool:
        """Make the item whose data is ``data`` current (signals blocked); False if there is none."""
        values = [combo.itemData(i) for i in range(combo.count())]
        if data not in values:
            return False
        if combo.currentIndex != values.index(data):
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = values.index(data)
            combo.blockSignals(wasBlocked)
        return True

    def refreshDevices(self, probe: bool = False) -> None:
        """Fill ``ui.deviceSelector`` (auto, CPU, and with ``probe`` every GPU torch sees) and keep the choice."""
        from SCDLSlicerLib import devices

        current = self._parameterNode.device if self._parameterNode else "auto"
        try:
            self._devices = devices.list_devices(probe_gpus=probe)
        except Exception as err:  # noqa: BLE001 - a broken CUDA install must not break the panel
            self._devices = devices.base_devices()
            logging.warning(f"GPU detection failed: {err}")
        self._fillCombo(self.ui.deviceSelector, [(label, value) for value, label in self._devices])
        self._selectDevice(current)

    def _selectDevice(self, device) -> None:
        if not self._selectData(self.ui.deviceSelector, device):  # e.g. "cuda:1" saved before GPUs were detected
            self._devices.append((device, device))
            self.ui.deviceSelector.addItem(device, device)
            self._selectData(self.ui.deviceSelector, device)

    def onDeviceSelected(self, index) -> None:
        if self._parameterNode and 0 <= index < len(self._devices):
            self._parameterNode.device = self._devices[index][0]

    def _fillTable(self, table, rows, groupBox=None) -> None:
        """Rows of texts into a ``QTableWidget`` (items made by ``self.TableItem``, the widget's
        ``qt.QTableWidgetItem``), signals blocked; ``groupBox`` collapses when there is no row."""
        wasBlocked = table.blockSignals(True)
        table.setRowCount(len(rows))
        for row, texts in enumerate(rows):
            for column, text in enumerate(texts):
                table.setItem(row, column, self.TableItem(str(text)))
        table.blockSignals(wasBlocked)
        if groupBox is not None:
            groupBox.collapsed = not rows

    # -- dependencies ---------------------------------------------------------------------------------
    def updateDependencyStatus(self) -> None:
        plan = self.logic.dependencyPlan()
        if plan.empty:
            self.ui.dependenciesLabel.text = _("All required Python packages are installed.")
        else:
            missing = ([f"torch{plan.torch}"] if plan.torch else []) + plan.packages
            self.ui.dependenciesLabel.text = _("Missing: {packages}").format(packages=", ".join(missing))
        self.ui.installDependenciesButton.enabled = not plan.empty

    def _ensureDependencies(self, declinedText: str) -> bool:
        """Ask once (listing everything) and install what is missing; False if the user declined (the status
        line then says ``declinedText``) or the installation failed."""
        plan = self.logic.dependencyPlan()
        if plan.empty:
            return True
        if not slicer.util.confirmOkCancelDisplay(plan.describe(), windowTitle=_("SCDL: install Python packages")):
            self.ui.statusLabel.text = declinedText
            return False
        try:
            self.logic.installDependencies(plan)
        except Exception as err:  # noqa: BLE001 - shown to the user as one message
            self._error(_("Installing the Python packages failed: {error}").format(error=err))
            return False
        finally:
            self.updateDependencyStatus()
        return True

    def onInstallDependencies(self) -> None:
        if self.ensureDependencies():
            self.ui.statusLabel.text = _("Python packages are installed.")

    # -- log and messages -----------------------------------------------------------------------------
    def _appendLog(self, text) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def _showError(self, text, windowTitle: str) -> None:
        """The error into the log and a message box titled ``windowTitle``."""
        self._appendLog("error: " + text)
        slicer.util.errorDisplay(text, windowTitle=windowTitle)
