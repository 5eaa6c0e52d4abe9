"""SCDLTrain: fine-tune an SCDL model on your own CT cohort, semi-supervised, from 3D Slicer.

This file holds the module descriptor and the widget's wiring (the .ui, its signals, the Qt objects). The panel's
behaviour is in ``SCDLTrainLib.handlers``, the Logic and parameter node in ``SCDLTrainLib.logic``, the self-test in
``SCDLTrainLib.selftest``; what SCDLTrain shares with SCDLSegment in ``SCDLSlicerLib``. The training runs
``PythonSlicer -m scdl train ... --progress json`` in a child process; nothing heavy is imported at module load.
"""

import os

import qt
import vtk

import slicer

# SCDLTrainLib first: in a developer checkout it makes SCDLSlicerLib importable. Then the Slicer version, before
# anything an older Slicer lacks: there the module stops here with one clear message (SCDLSlicerLib.extension).
from SCDLTrainLib import SUBMODULES
from SCDLSlicerLib.extension import docs_url, module_docs_url, require_supported_slicer

require_supported_slicer(slicer, lambda message: qt.QTimer.singleShot(0, lambda: slicer.util.errorDisplay(message)))

from slicer.i18n import tr as _  # noqa: E402 - after the version check
from slicer.i18n import translate  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget  # noqa: E402
from slicer.util import VTKObservationMixin  # noqa: E402

from SCDLTrainLib import tables  # noqa: E402
from SCDLTrainLib.handlers import TrainPanelHandlers  # noqa: E402
from SCDLTrainLib.logic import COHORT_SOURCES, SCDLTrainLogic, SCDLTrainParameterNode  # noqa: E402, F401
from SCDLTrainLib.selftest import SCDLTrainTest  # noqa: E402, F401 - Slicer finds the self-test in the module file
from SCDLSlicerLib.panel import PanelMixin  # noqa: E402

PAPER = ('Su et al., "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image '
         'Segmentation", arXiv 2603.05202, 2026')

#: Milliseconds between two polls of a running child process.
POLL_INTERVAL_MS = 200


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
            "<p>Documentation: <a href=\"{tutorial}\">SCDL Train tutorial</a>; installation, command line, "
            "models and licences: <a href=\"{home}\">SCDL home page</a>.</p>"
            "<p>Research software, not for clinical use.</p>"
        ).format(paper=PAPER, tutorial=module_docs_url("SCDLTrain"), home=docs_url())
        self.parent.acknowledgementText = _(
            "SCDL (Semantic Class Distribution Learning) was proposed by {paper}. This extension re-implements the "
            "method; it uses MONAI, PyTorch, SimpleITK and slicerio. The bundled sample CT and default model derive "
            "from TotalSegmentator data (Wasserthal et al., Radiology: Artificial Intelligence 2023; University "
            "Hospital Basel; CC BY 4.0). Licence (Apache-2.0) and credits: LICENSE and NOTICE on the SCDL home page."
        ).format(paper=PAPER)


#
# SCDLTrainWidget
#


class SCDLTrainWidget(TrainPanelHandlers, PanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI glue: widgets <-> parameter node, tables, and a timer that polls the running child (the parts shared
    with SCDLSegment are in ``SCDLSlicerLib.panel``)."""

    HELPER_PACKAGE = "SCDLTrainLib"
    HELPER_SUBMODULES = SUBMODULES

    #: Widgets the parameter node wrapper cannot bind (their values are combo-box item data, folder strings or the
    #: text of a QPlainTextEdit): widget -> (parameter, change signal), all handled by :meth:`_onWidgetEdited`. The
    #: spin boxes, the CPU-preset check box and the run name are bound by ``SlicerParameterName`` in the .ui.
    HAND_BOUND = {
        "cohortSourceSelector": ("cohortSource", "currentIndexChanged(int)"),
        "frameworkSelector": ("framework", "currentIndexChanged(int)"),
        "sourceLabelsSelector": ("sourceLabels", "currentIndexChanged(int)"),
        "initModelSelector": ("initModel", "currentIndexChanged(int)"),
        "deviceSelector": ("device", "currentIndexChanged(int)"),
        "labeledFolderButton": ("labeledFolder", "directoryChanged(QString)"),
        "unlabeledFolderButton": ("unlabeledFolder", "directoryChanged(QString)"),
        "valFolderButton": ("valFolder", "directoryChanged(QString)"),
        "runsFolderButton": ("runsFolder", "directoryChanged(QString)"),
        "manifestPathLineEdit": ("manifestPath", "currentPathChanged(QString)"),
        "advancedTextEdit": ("advanced", "textChanged()"),
    }
    TableItem = qt.QTableWidgetItem

    def __init__(self, parent=None) -> None:
        self.logic = self.ui = self._parameterNode = self._parameterNodeGuiTag = self._timer = None
        self._models, self._devices, self._matches, self._cases, self._sceneProblems = [], [], [], [], []
        self._n_classes = 0
        self._task = None          # (kind, job): kind in "check", "train", "register", "review"
        self._curves = self._export = self._signatureAtCheck = None
        self._check = None         # (signature, CohortCheck, scene problems) of the last finished check
        self._seen = {}            # the parameters at the last update (what changed since)
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
        for name, (_parameter, signal) in self.HAND_BOUND.items():
            getattr(ui, name).connect(signal, lambda *args, name=name: self._onWidgetEdited(name))
        for widget, signal, slot in (
                (ui.refreshCohortButton, "clicked()", self.refreshSceneCohort),
                (ui.cohortTable, "cellChanged(int,int)", self.onCohortCellChanged),
                (ui.mappingTable, "cellChanged(int,int)", self.onMappingCellChanged),
                (ui.checkCohortButton, "clicked()", self.onCheckCohort),
                (ui.refreshModelsButton, "clicked()", self.refreshModels),
                (ui.startButton, "clicked()", self.onStart),
                (ui.stopButton, "clicked()", self.onStop),
                (ui.resumeButton, "clicked()", self.onResume),
                (ui.showCurvesButton, "clicked()", self.onShowCurves),
                (ui.openRunFolderButton, "clicked()", self.onOpenRunFolder),
                (ui.reviewButton, "clicked()", self.onReview),
                (ui.installDependenciesButton, "clicked()", self.onInstallDependencies)):
            widget.connect(signal, slot)
        labels = {"scene": _("Scene: volumes and their segmentations"), "folders": _("Folders"),
                  "manifest": _("Manifest file (CSV or JSON)")}
        self._fillCombo(ui.cohortSourceSelector, [(labels[s], s) for s in COHORT_SOURCES])
        self._fillCombo(ui.frameworkSelector, self.logic.frameworkChoices())
        self._fillCombo(ui.sourceLabelsSelector, self.logic.sourceLabelChoices())
        for table, columns in ((ui.cohortTable, tables.COHORT_COLUMNS), (ui.mappingTable, tables.MAPPING_COLUMNS),
                               (ui.problemsTable, tables.PROBLEM_COLUMNS)):
            table.setColumnCount(len(columns))
            table.setHorizontalHeaderLabels(list(columns))
        self.refreshDevices(probe=False)
        self.refreshModels()
        self.updateDependencyStatus()
        self.initializeParameterNode()

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

    def onOpenRunFolder(self) -> None:
        folder = self._parameterNode.runFolder if self._parameterNode else ""
        if folder and os.path.isdir(folder):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))
