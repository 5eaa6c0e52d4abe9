"""SCDLTrain tier 3: widget handlers with a stand-in ``ui`` built from the real .ui file and the real Logic.

The stand-in is the harness's ``fakeui`` plus the few table / text-box methods SCDLTrain calls
(``item``, ``setColumnCount``, ``setHorizontalHeaderLabels``, ``toPlainText``, ``setPlainText``).
Message boxes are recorded (the ``dialogs`` fixture); child processes, scene and files are real.
"""

import functools
import json
import os
import sys

import pytest
import SimpleITK as sitk
import slicer

from fakeui import FakeWidget, make_fake_ui, ui_parameter_names, user_edit
from harness import REPO
from SCDLTrain import SCDLTrainLogic, SCDLTrainWidget
from SCDLTrainLib import trainjob
from SCDLSlicerLib import dependencies as deps
from SCDLSlicerLib.process import ChildProcess
from widgettools import pump

UI_FILE = REPO / "SCDLTrain" / "Resources" / "UI" / "SCDLTrain.ui"


class TrainFakeWidget(FakeWidget):
    """``FakeWidget`` + what SCDLTrain uses of QTableWidget, QPlainTextEdit, QWidget, QCheckBox, ctkPathLineEdit."""

    def __init__(self, name, cls):
        super().__init__(name, cls)
        self.visible = True
        self.checked = False
        self.currentPath = ""
        self.plainText = ""
        self.headers = []
        self.columnCount_ = 0

    def item(self, row, column):
        return self.rows.get((row, column))

    def setColumnCount(self, count):
        self.columnCount_ = count

    def setHorizontalHeaderLabels(self, labels):
        self.headers = list(labels)

    def toPlainText(self):
        return self.plainText

    def setPlainText(self, text):
        self.plainText = text

    def table(self):
        """Test helper: the table's texts, row by row."""
        return [[self.rows[(r, c)].text() for c in range(self.columnCount_)] for r in range(self.rowCount_)]


@pytest.fixture
def widget(slicer_app, scdl_home, fake_qt, dialogs):
    w = SCDLTrainWidget()
    w.connectUi(make_fake_ui(UI_FILE, TrainFakeWidget), SCDLTrainLogic(backend="popen"))
    yield w
    w.cleanup()


_pump = functools.partial(pump, timeout=180.0)


def _index(combo, data):
    return [item[1] for item in combo.items].index(data)


def _edit(table, row, column, text, handler, fake_qt):
    table.setItem(row, column, fake_qt.QTableWidgetItem(text))
    handler(row, column)


TINY = "network.n_filters = 2\npreprocessing.spacing_mm = [8, 8, 8]\ndata.num_workers = 0\nthreads = 1\n"


def test_every_control_is_connected_and_defaults_fit_the_machine(widget, scdl_home):
    ui = widget.ui
    expected = {
        "refreshCohortButton": ("clicked()", widget.refreshSceneCohort),
        "cohortTable": ("cellChanged(int,int)", widget.onCohortCellChanged),
        "mappingTable": ("cellChanged(int,int)", widget.onMappingCellChanged),
        "checkCohortButton": ("clicked()", widget.onCheckCohort),
        "refreshModelsButton": ("clicked()", widget.refreshModels),
        "startButton": ("clicked()", widget.onStart),
        "stopButton": ("clicked()", widget.onStop),
        "resumeButton": ("clicked()", widget.onResume),
        "showCurvesButton": ("clicked()", widget.onShowCurves),
        "openRunFolderButton": ("clicked()", widget.onOpenRunFolder),
        "reviewButton": ("clicked()", widget.onReview),
        "installDependenciesButton": ("clicked()", widget.onInstallDependencies),
    }
    for name, connection in expected.items():
        assert getattr(ui, name).connections == [connection], name
    # every option is bound: declaratively (SlicerParameterName in the .ui, the parameter node wrapper connects
    # it) or through the one hand-binding table; no option has a handler of its own
    declared = ui_parameter_names(UI_FILE)
    assert set(declared.values()) | {p for p, _s in widget.HAND_BOUND.values()} | {
        "segmentMapping", "runFolder", "trainedModelId"} == set(widget._parameterNode.allParameters)
    for name, parameter in declared.items():
        assert [signal for signal, _slot in getattr(ui, name).connections] == [
            {"QSpinBox": "valueChanged(int)", "QDoubleSpinBox": "valueChanged(double)", "QCheckBox": "toggled(bool)",
             "QLineEdit": "textChanged(QString)"}[getattr(ui, name).className]], name
    for name, (_parameter, signal) in widget.HAND_BOUND.items():
        assert [s for s, _slot in getattr(ui, name).connections] == [signal], name
    node = widget._parameterNode
    # no CUDA here: the panel starts with the CPU preset (the paper's 17,000 iterations would take days)
    assert (node.framework, node.iterations, node.patchSize, node.labeledBatch, node.unlabeledBatch, node.scdlWeight,
            node.cpuPreset) == ("cps-scdl", 1500, 48, 2, 2, 0.1, True)
    assert (ui.iterationsSpinBox.value, ui.patchSizeSpinBox.value, ui.scdlWeightSpinBox.value) == (1500, 48, 0.1)
    assert ui.cpuPresetCheckBox.checked is True
    assert node.runsFolder == str(scdl_home / "runs") and ui.runNameLineEdit.text == node.runName != ""
    from scdl.training.config import Framework

    assert [i[1] for i in ui.frameworkSelector.items] == list(Framework.values())    # the core's choices
    assert ui.frameworkSelector.items[ui.frameworkSelector.currentIndex][1] == "cps-scdl"
    assert [i[1] for i in ui.initModelSelector.items] == [""]        # nothing installed: from scratch only
    assert ui.mappingTable.headers == ["Segment", "Model class", "Matched by", "Cases"]
    assert ui.startButton.enabled is False and ui.stopButton.enabled is False and ui.resumeButton.enabled is False
    assert "extrapolated" not in ui.estimateLabel.text and "h" in ui.estimateLabel.text   # 48³ / width 8: measured


def test_panel_defaults(widget, monkeypatch) -> None:
    """With CUDA the paper's settings; without, the CPU preset; the installed default model is the initial
    model when its classes are the run's (the automatic patch: its own), not when Advanced asks for others."""
    from harness import REPO

    logic = widget.logic
    assert logic.panelDefaults(cuda=True) == {"cpuPreset": False, "iterations": 17000, "patchSize": 96}
    assert logic.panelDefaults(cuda=False) == {"cpuPreset": True, "iterations": 1500, "patchSize": 48}
    monkeypatch.setenv("SCDL_RESOURCES", str(REPO / "Resources"))          # with the bundled default model
    assert logic.panelDefaults(cuda=False) == {"cpuPreset": True, "iterations": 1500, "patchSize": 0,
                                               "initModel": "scdl-abdominal-ct"}
    assert "initModel" not in logic.panelDefaults(["labels = amos"], cuda=False)
    opts = logic.makeOptions("/tmp/run", {"manifest": "/tmp/m.csv"}, init="scdl-abdominal-ct", preset="cpu",
                             patch_size=0)
    assert not any(a.startswith("patch_size") for a in opts.overrides())
    assert opts.resolve()["patch_size"] == [64, 64, 32]                  # the default model's card


def test_scene_tables_and_corrections(widget, train_scene, dialogs, fake_qt):
    ui = widget.ui
    widget.refreshSceneCohort()
    rows = ui.cohortTable.table()
    assert [r[:2] for r in rows] == [["blockA", "auto"], ["blockB", "auto"], ["blockC", "auto"]]
    assert rows[2][2:] == ["(unlabeled)", "training (unlabeled)", ""]
    assert "liver" in rows[0][2] and rows[0][3] in ("training", "validation")
    # patient A's blocks hold 12 of the 13 Synapse organs (no oesophagus): that one is unknown there
    assert rows[0][4].endswith("(the other 1 unknown)") and "liver" in rows[0][4] and "esophagus" not in rows[0][4]
    mapping = {r[0]: r for r in ui.mappingTable.table()}
    assert mapping["liver"][1:3] == ["liver", "name"] and mapping["kidney_right"][1] == "right kidney"
    assert mapping["colon"][1:3] == ["", "UNKNOWN"] and mapping["liver"][3] == "blockA, blockB"
    # the default validation share (0.2) of 2 labeled volumes rounds to none; 0.5 holds one out
    assert ui.cohortCountsLabel.text.startswith("Scene: 2 labeled and 1 unlabeled training volume(s), 0 for validation")
    user_edit(widget.ui.valFractionSpinBox, 0.5)
    assert ui.cohortCountsLabel.text.startswith("Scene: 1 labeled and 1 unlabeled training volume(s), 1 for validation")
    assert sorted(r[3] for r in ui.cohortTable.table()) == ["training", "training (unlabeled)", "validation"]
    # the user maps "colon" to the stomach and types a class that does not exist for "rib_left_1"
    row = [r[0] for r in ui.mappingTable.table()].index("colon")
    _edit(ui.mappingTable, row, 1, "Stomach", widget.onMappingCellChanged, fake_qt)
    assert json.loads(widget._parameterNode.segmentMapping) == {"colon": 7}
    assert ui.mappingTable.table()[row][1:3] == ["stomach", "you"]
    bad = [r[0] for r in ui.mappingTable.table()].index("vertebrae_L1")
    _edit(ui.mappingTable, bad, 1, "brain", widget.onMappingCellChanged, fake_qt)
    assert len(dialogs.errors) == 1 and "'brain' is not a class of the model" in dialogs.errors[0]
    assert json.loads(widget._parameterNode.segmentMapping) == {"colon": 7}
    # roles typed into the cohort table are stored on the volume nodes
    _edit(ui.cohortTable, 2, 1, "exclude", widget.onCohortCellChanged, fake_qt)
    assert train_scene["blockC"][0].GetAttribute("SCDLTrain.Role") == "exclude"
    assert ui.cohortTable.table()[2][1:] == ["exclude", "(unlabeled)", "not used", ""]
    _edit(ui.cohortTable, 0, 1, "later", widget.onCohortCellChanged, fake_qt)
    assert "Role 'later' of blockA" in dialogs.errors[-1] and ui.cohortTable.table()[0][1] == "auto"


def test_options_preset_advanced_and_estimate(widget):
    ui = widget.ui
    user_edit(widget.ui.cpuPresetCheckBox, True)
    node = widget._parameterNode
    assert (node.cpuPreset, node.iterations, node.patchSize) == (True, 1500, 48)
    assert (ui.iterationsSpinBox.value, ui.patchSizeSpinBox.value) == (1500, 48)
    # the user unticks the CPU preset: the paper's iterations and patch, in the node and in the spin boxes
    user_edit(ui.cpuPresetCheckBox, False)
    assert (node.cpuPreset, node.iterations, node.patchSize) == (False, 17000, 96)
    assert (ui.iterationsSpinBox.value, ui.patchSizeSpinBox.value) == (17000, 96)
    user_edit(ui.patchSizeSpinBox, 64)                  # a spin box edit reaches the node (declarative binding)
    assert node.patchSize == 64 and "patch_size=[64,64,64]" in widget._options().overrides()
    user_edit(ui.cpuPresetCheckBox, True)
    assert (node.iterations, node.patchSize, ui.iterationsSpinBox.value) == (1500, 48, 1500)
    # cpu preset, 48³, width 8, CPS+SCDL: the fitted 1.59 CPU s per step (measured 1.60, see
    # test_slicer_train_options.py) x 1500 iterations
    assert ui.estimateLabel.text.startswith("Estimate: about 1.6 s per iteration, 39 min 47 s in all; the training "
                                            "steps need about 1.0 GiB of memory.")
    user_edit(ui.frameworkSelector, _index(ui.frameworkSelector, "supervised"))                     # supervised: no SCDL weight, no unlabeled batch
    assert node.framework == "supervised" and ui.scdlWeightSpinBox.enabled is False
    assert ui.unlabeledBatchSpinBox.enabled is False
    user_edit(ui.advancedTextEdit, "optimizer.lrate = 0.1")
    assert node.advanced == "optimizer.lrate = 0.1"
    assert ui.estimateLabel.text.startswith("Settings: ") and "unknown setting 'lrate'" in ui.estimateLabel.text
    user_edit(ui.advancedTextEdit, "network.n_filters = 4")
    assert ui.estimateLabel.text.startswith("Estimate: about")
    user_edit(ui.deviceSelector, 1)
    assert node.device == "cpu"


def test_check_of_the_scene_enables_start_until_something_changes(widget, train_scene, dialogs, tmp_path):
    node = widget._parameterNode
    node.runsFolder = str(tmp_path / "runs")
    node.advanced = TINY
    user_edit(widget.ui.valFractionSpinBox, 0.5)
    user_edit(widget.ui.cpuPresetCheckBox, True)
    node.patchSize, node.labeledBatch, node.unlabeledBatch = 16, 1, 1
    widget.onCheckCohort()
    assert widget._task[0] == "check" and widget.ui.checkCohortButton.enabled is False
    _pump(widget, lambda: widget._task is None)
    # no segment of the scene is an oesophagus and no initial model brings one: an error, not a silent
    # background class (partial labels: a class no case draws is unknown everywhere)
    errors = [r for r in widget.ui.problemsTable.table() if r[1] == "error"]
    assert len(errors) == 1 and "esophagus" in errors[0][2] and "--labels" in errors[0][3]
    assert widget.ui.startButton.enabled is False
    from scdl.labels.table import LabelTable

    table = LabelTable.load("synapse")
    rows = ["LabelValue,Name,Color_R,Color_G,Color_B,Color_A"] + [
        f"{e.value},{e.name},100,100,100,255" for e in table.entries if e.value and e.name != "esophagus"]
    classes = tmp_path / "no_esophagus.csv"
    classes.write_text("\n".join(rows) + "\n", encoding="utf-8")
    node.advanced = TINY + f'labels = "{classes}"\n'
    widget.onCheckCohort()
    _pump(widget, lambda: widget._task is None)
    assert dialogs.errors == []
    problems = widget.ui.problemsTable.table()
    assert {(r[0], r[1]) for r in problems} >= {("blockA", "warning"), ("blockB", "warning")}
    assert all(r[1] == "warning" for r in problems)
    exported = tmp_path / "runs" / node.runName / "cohort" / "manifest.csv"
    assert exported.is_file()
    assert widget.ui.cohortCountsLabel.text.startswith("1 labeled, 1 unlabeled, 1 validation case(s); 0 error(s)")
    assert widget.ui.cohortCountsLabel.text.endswith("Ready to start.")
    assert widget.ui.startButton.enabled is True
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")    # unrelated nodes change nothing
    assert widget.ui.startButton.enabled is True
    checked, iterations = widget._check, node.iterations
    user_edit(widget.ui.iterationsSpinBox, 2000)                   # any change of the options: check again before starting
    assert widget.ui.startButton.enabled is False
    node.iterations, widget._check = iterations, checked                # back to the checked state ...
    widget._updateButtons()
    assert widget.ui.startButton.enabled is True
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another CT")  # ... a new CT: check again
    assert widget.ui.startButton.enabled is False
    widget.onStart()
    assert "Check the cohort first" in dialogs.errors[-1] and widget._task is None


def test_manifest_cohort_problems_are_listed_per_row(widget, train_blocks, dialogs, tmp_path):
    """A label map on another grid (a half-voxel shift, as BinShrink leaves it) is an error of its row."""
    ct_a, lab_a = train_blocks["blockA"]
    ct_b, lab_b = train_blocks["blockB"]
    shifted = sitk.ReadImage(str(lab_b))
    shifted.SetOrigin([o + 3.0 for o in shifted.GetOrigin()])
    sitk.WriteImage(shifted, str(tmp_path / "blockB_shifted.nrrd"))
    (tmp_path / "cohort.csv").write_text(
        "image,label,split,labels\n"
        f"{ct_a},{lab_a},train,totalsegmentator_v2\n"
        f"{ct_b},{tmp_path / 'blockB_shifted.nrrd'},train,totalsegmentator_v2\n"
        f"{train_blocks['blockC'][0]},,train,\n")
    node = widget._parameterNode
    node.runsFolder = str(tmp_path / "runs")
    user_edit(widget.ui.cohortSourceSelector, 2)
    assert widget.ui.manifestCohortWidget.visible is True and widget.ui.sceneCohortWidget.visible is False
    user_edit(widget.ui.manifestPathLineEdit, str(tmp_path / "cohort.csv"))
    node.labeledBatch, node.unlabeledBatch, node.patchSize = 1, 1, 16
    widget.onCheckCohort()
    _pump(widget, lambda: widget._task is None)
    rows = widget.ui.problemsTable.table()
    errors = [r for r in rows if r[1] == "error"]
    assert [r[0] for r in errors] == ["cohort.csv:3 (blockB_shifted.nrrd)"]
    assert "grid differs from its CT" in errors[0][2] and "data.resample_labels=true" in errors[0][3]
    assert "1 error(s)" in widget.ui.cohortCountsLabel.text
    assert widget.ui.startButton.enabled is False


def _replayed_run(run_dir, model_dir, stop_after=None):
    """A TrainJob whose child replays the JSON lines of a real run (format of scdl/training/trainer.py)."""
    lines = [
        {"phase": "check", "done": 1, "total": 1, "eta_s": 0.0},
        {"event": "start", "iteration": 0, "iterations": 2, "framework": "cps-scdl", "device": "cpu",
         "labeled": 1, "unlabeled": 1, "validation": 1},
        {"event": "iteration", "iteration": 1, "iterations": 2, "loss": {"total": 13.0, "sup": 12.8, "cps": 11.9,
                                                                       "w_cps": 0.0007, "scdl": 0.2}, "lr": 0.01, "eta_s": 1.0},
        {"phase": "train", "done": 1, "total": 2, "eta_s": 1.0},
        {"event": "iteration", "iteration": 2, "iterations": 2, "loss": {"total": 12.7, "sup": 12.5, "cps": 11.7,
                                                                       "w_cps": 0.003, "scdl": 0.2}, "lr": 0.005, "eta_s": 0.0},
        {"event": "validation", "iteration": 2, "mean_dice": 0.0625, "dice": {"liver": 0.25, "spleen": 0.0},
         "best_iteration": 2, "best_mean_dice": 0.0625},
        {"event": "model", "path": str(model_dir)},
        {"phase": "done", "output": str(model_dir), "iteration": 2, "best_mean_dice": 0.0625, "elapsed_s": 3.0},
    ]
    script = "import json, sys, time\nfor line in %r:\n    print(line, flush=True)\n" % [json.dumps(x) for x in lines]
    if stop_after is not None:
        script = "import time\nprint(%r, flush=True)\ntime.sleep(60)\n" % json.dumps(lines[1])
    job = trainjob.TrainJob(["train"], run_dir, backend="popen")
    job.process = ChildProcess([sys.executable, "-c", script], env=dict(os.environ), backend="popen", kill_grace_s=5)
    return job


def test_finished_run_is_registered_selected_and_its_card_shown(widget, coarse_model, scdl_home, dialogs, tmp_path,
                                                                 monkeypatch):
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(widget.logic, "startTraining", lambda opts: _replayed_run(run_dir, coarse_model).start())
    monkeypatch.setattr(widget, "_checkIsCurrent", lambda: True)     # the check itself is tested above
    node = widget._parameterNode
    node.runsFolder, node.runName = str(tmp_path / "runs"), "r1"
    node.cohortSource, node.manifestPath = "manifest", str(tmp_path / "m.csv")
    widget.onStart()
    assert widget._task[0] == "train" and widget.ui.stopButton.enabled is True
    assert node.runFolder == str(run_dir)
    _pump(widget, lambda: widget._task is None or widget._task[0] != "train")
    loss = widget._curves.loss_table.GetTable()
    assert loss.GetNumberOfRows() == 2 and loss.GetValueByName(1, "total").ToDouble() == 12.7
    assert widget._curves.dice_table.GetTable().GetValueByName(0, "dice_liver").ToDouble() == 0.25
    assert widget.ui.progressBar.value == 100 and widget.ui.statusLabel.text.startswith("Done: 2 iterations in 3 s")
    assert any("validation at iteration 2: mean Dice 0.0625" in line for line in widget.ui.logTextEdit.lines)
    assert node.runName != "r1"                                          # the next run goes to a new folder
    _pump(widget, lambda: widget._task is None, timeout=120)            # scdl models import (a real child)
    assert dialogs.errors == []
    assert node.trainedModelId == "coarse-test-model"
    assert (scdl_home / "models" / "coarse-test-model" / "manifest.json").is_file()
    import SCDLSegment

    assert SCDLSegment.SCDLSegmentLogic().getParameterNode().modelId == "coarse-test-model"
    assert "<b>Training data</b></td><td>none (random weights)" in widget.ui.modelCardBrowser.html
    assert widget.ui.resultStatusLabel.text == "Model 'coarse-test-model' registered and selected in SCDL Segment."
    assert "coarse-test-model" in [i[1] for i in widget.ui.initModelSelector.items]   # fine-tune it further
    assert widget.ui.reviewButton.enabled is True
    widget.onOpenRunFolder()
    assert widget.ui.openRunFolderButton.enabled is True


def test_stop_button_and_resume_availability(widget, dialogs, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "r2"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(widget.logic, "startTraining", lambda opts: _replayed_run(run_dir, None, stop_after=1).start())
    monkeypatch.setattr(widget, "_checkIsCurrent", lambda: True)
    node = widget._parameterNode
    node.runsFolder, node.runName = str(tmp_path / "runs"), "r2"
    node.cohortSource, node.manifestPath = "manifest", str(tmp_path / "m.csv")
    widget.onStart()
    job = widget._task[1]
    _pump(widget, lambda: job.monitor.started)
    widget.onStop()
    assert widget.ui.statusLabel.text.startswith("Stopping after the current iteration")
    assert widget.ui.stopButton.enabled is False
    _pump(widget, lambda: widget._task is None, timeout=30)
    assert dialogs.errors == [] and widget.ui.resumeButton.enabled is False   # no checkpoint was written
    (run_dir / "config.json").write_text("{}")
    (run_dir / "checkpoint.pt").write_bytes(b"")
    widget._updateButtons()
    assert widget.ui.resumeButton.enabled is True
    node.runFolder, node.runName = "", "elsewhere"                          # a new session: nothing to resume ...
    widget._updateButtons()
    assert widget.ui.resumeButton.enabled is False
    node.runName = "r2"                                                      # ... until the run's name is typed
    widget._updateButtons()
    assert widget.ui.resumeButton.enabled is True and widget._resumeTarget() == str(run_dir)
    (run_dir / "model").mkdir()
    (run_dir / "model" / "card.json").write_text("{}")
    widget._updateButtons()
    assert widget.ui.resumeButton.enabled is False                            # finished runs are not resumed


def test_one_confirmation_lists_all_missing_packages(widget, monkeypatch, dialogs):
    plan = deps.InstallPlan(torch=">=2.1", packages=["monai>=1.3"], torch_found=None)
    monkeypatch.setattr(widget.logic, "dependencyPlan", lambda: plan)
    installed = []
    monkeypatch.setattr(widget.logic, "installDependencies", lambda p: installed.append(p))
    widget.updateDependencyStatus()
    assert widget.ui.dependenciesLabel.text == "Missing: torch>=2.1, monai>=1.3"
    dialogs.confirm = False
    widget.onCheckCohort()
    assert len(dialogs.confirmations) == 1 and installed == [] and widget._task is None
    assert "  - monai>=1.3" in dialogs.confirmations[0]


def test_review_segments_the_validation_cases_with_the_new_model(widget, patient_a_volume, coarse_model, scdl_home,
                                                                  dialogs, monkeypatch):
    import shutil

    shutil.copytree(coarse_model, scdl_home / "models" / "coarse-test-model")
    monkeypatch.setattr(widget.logic, "validationVolumes", lambda runDir: [patient_a_volume])
    node = widget._parameterNode
    node.trainedModelId, node.device = "coarse-test-model", "cpu"
    widget._updateButtons()
    assert widget.ui.reviewButton.enabled is True
    widget.onReview()
    assert widget._task[0] == "review"
    assert widget.ui.resultStatusLabel.text == "Segmenting 1 validation case(s) with 'coarse-test-model'..."
    _pump(widget, lambda: widget._task is None, timeout=120)
    assert dialogs.errors == []
    assert widget.ui.resultStatusLabel.text == "1 segmented, 0 failed, 0 cancelled (of 1)"
    result = slicer.mrmlScene.GetFirstNodeByName("patientA - coarse-test-model")
    assert result is not None and result.GetAttribute("SCDLTrain.Prediction") == "coarse-test-model"
    assert widget.ui.progressBar.value == 100
