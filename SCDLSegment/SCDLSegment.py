"""SCDLSegment: abdominal CT organ segmentation with SCDL models, in 3D Slicer: the module descriptor and the
widget's wiring (the .ui, its signals, the Qt objects). Panel behaviour: ``SCDLSegmentLib.handlers``; Logic and
parameter node: ``SCDLSegmentLib.logic``; self-test: ``SCDLSegmentLib.selftest``; shared with SCDLTrain:
``SCDLSlicerLib``. The segmentation runs in a child process (``PythonSlicer -m scdl segment``); nothing heavy is
imported at module load."""

import qt

import slicer

# SCDLSegmentLib first: in a developer checkout it makes SCDLSlicerLib importable. Then the Slicer version, before
# anything an older Slicer lacks: there the module stops here with one clear message (SCDLSlicerLib.extension).
from SCDLSegmentLib import SUBMODULES
from SCDLSlicerLib.extension import docs_url, module_docs_url, require_supported_slicer

require_supported_slicer(slicer, lambda message: qt.QTimer.singleShot(0, lambda: slicer.util.errorDisplay(message)))

from slicer.i18n import tr as _  # noqa: E402 - after the version check
from slicer.i18n import translate  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget  # noqa: E402
from slicer.util import VTKObservationMixin  # noqa: E402

from SCDLSegmentLib.handlers import SegmentPanelHandlers  # noqa: E402
from SCDLSegmentLib.logic import SCDLSegmentLogic, SCDLSegmentParameterNode, findCtInputs  # noqa: E402, F401 - module API
from SCDLSegmentLib.selftest import SCDLSegmentTest  # noqa: E402, F401 - Slicer finds the self-test in the module file
from SCDLSlicerLib.panel import PanelMixin  # noqa: E402

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
            "<p>Documentation: <a href=\"{tutorial}\">SCDL Segment tutorial</a>; installation, command line, "
            "models and licences: <a href=\"{home}\">SCDL home page</a>.</p>"
            "<p>Research software, not for clinical use.</p>"
        ).format(paper=PAPER, tutorial=module_docs_url("SCDLSegment"), home=docs_url())
        self.parent.acknowledgementText = _(
            "SCDL (Semantic Class Distribution Learning) was proposed by {paper}. This extension re-implements the "
            "method; it uses MONAI, PyTorch, SimpleITK and slicerio. The bundled sample CT and default model derive "
            "from TotalSegmentator data (Wasserthal et al., Radiology: Artificial Intelligence 2023; University "
            "Hospital Basel; CC BY 4.0). Licence (Apache-2.0) and credits: LICENSE and NOTICE on the SCDL home page."
        ).format(paper=PAPER)



class SCDLSegmentWidget(SegmentPanelHandlers, PanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
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

    def onOpenCacheFolder(self) -> None:
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.logic.modelCacheFolder())))

    def onImportModel(self) -> None:
        if self._task is not None:
            return
        path = qt.QFileDialog.getOpenFileName(
            None, _("Import SCDL model"), "", _("SCDL model package (*.scdlmodel manifest.json card.json);;All files (*)"))
        if path and self.ensureDependencies():
            self._startModelsJob(self.logic.startModelImport(path), _("Importing and verifying {path}...").format(path=path))
