"""Tier 3: widget handlers with a stand-in ``ui`` (built from the real .ui file) and the real Logic.

Message boxes (``slicer.util.errorDisplay`` / ``confirmOkCancelDisplay`` need the application) are
recorded instead (the ``dialogs`` fixture); child processes, scene and files are real.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import slicer

from fakeui import make_fake_ui
from harness import MODULE_DIR
from SCDLSegment import POLL_INTERVAL_MS, SCDLSegmentLogic, SCDLSegmentWidget
from SCDLSlicerLib import dependencies as deps
from widgettools import pump as _pump

UI_FILE = MODULE_DIR / "Resources" / "UI" / "SCDLSegment.ui"


@pytest.fixture
def widget(slicer_app, scdl_home, fake_qt, dialogs):
    w = SCDLSegmentWidget()
    w.connectUi(make_fake_ui(UI_FILE), SCDLSegmentLogic())
    yield w
    w.cleanup()


def _install(package: Path, scdl_home: Path) -> Path:
    """Put a package into the (test) model cache, as `scdl models import` would."""
    target = scdl_home / "models" / package.name
    shutil.copytree(package, target)
    return target


def _segmentation_nodes():
    return [slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


def test_every_control_is_connected_to_its_handler(widget):
    ui = widget.ui
    expected = {
        "applyButton": ("clicked(bool)", widget.onApplyButton),
        "modelSelector": ("currentIndexChanged(int)", widget.onModelSelected),
        "refreshModelsButton": ("clicked()", widget.refreshModels),
        "modelCardGroupBox": ("toggled(bool)", widget.onModelCardToggled),
        "deviceSelector": ("currentIndexChanged(int)", widget.onDeviceSelected),
        "detectGpusButton": ("clicked()", widget.onDetectGpus),
        "batchApplyButton": ("clicked(bool)", widget.onBatchApplyButton),
        "batchSourceSelector": ("currentIndexChanged(int)", widget.onBatchSourceChanged),
        "openCacheButton": ("clicked()", widget.onOpenCacheFolder),
        "clearCacheButton": ("clicked()", widget.onClearCache),
        "importModelButton": ("clicked()", widget.onImportModel),
        "downloadModelButton": ("clicked()", widget.onDownloadModel),
        "installDependenciesButton": ("clicked()", widget.onInstallDependencies),
    }
    for name, connection in expected.items():
        assert getattr(ui, name).connections == [connection], name
    assert widget._timer.interval == POLL_INTERVAL_MS and not widget._timer.isActive()
    assert [item[1] for item in ui.deviceSelector.items] == ["auto", "cpu"]
    # no model installed and no volume in the scene: Apply is disabled
    assert ui.applyButton.enabled is False and ui.applyButton.text == "Apply"


def test_model_selector_lists_catalog_and_cached_models_with_their_cards(widget, coarse_model, scdl_home, patient_a_volume):
    _install(coarse_model, scdl_home)
    widget.refreshModels()
    widget.initializeParameterNode()
    ui = widget.ui
    ids = [item[1] for item in ui.modelSelector.items]
    assert ids[:2] == ["scdl-abdominal-ct", "scdl-authors-amos-cps"] and "coarse-test-model" in ids
    assert "[not installed]" in ui.modelSelector.items[0][0] and "[download needed]" in ui.modelSelector.items[1][0]
    # the only installed model is preselected; its card is in the tooltip and the card view
    assert widget._parameterNode.modelId == "coarse-test-model"
    tip = ui.modelSelector.toolTip                    # the core's compact card (scdl.models.cardtext)
    assert "13 classes + background" in tip and "coarse-test-model" in tip and "['" not in tip and "None" not in tip
    assert "<b>Licence</b></td><td>Apache-2.0" in ui.modelCardBrowser.html
    assert "<b>Training data</b></td><td>none (random weights)" in ui.modelCardBrowser.html
    assert ui.downloadModelButton.enabled is False
    assert ui.applyButton.enabled is True
    # the authors' checkpoints: card from the catalog template, downloadable; Apply waits for the download
    widget.onModelSelected(ids.index("scdl-authors-amos-cps"))
    assert widget._parameterNode.modelId == "scdl-authors-amos-cps"
    assert "AMOS 2022 CT" in ui.modelCardBrowser.html and "unstated" in ui.modelCardBrowser.html
    assert ui.downloadModelButton.enabled is True
    assert ui.applyButton.enabled is False and "not installed" in ui.applyButton.toolTip
    assert str(scdl_home / "models") in ui.cacheFolderLabel.text


def test_device_choice_and_gpu_check_without_cuda(widget):
    ui = widget.ui
    widget.onDeviceSelected(1)
    assert widget._parameterNode.device == "cpu" and ui.deviceInfoLabel.text == ""
    widget.onDetectGpus()  # torch here is a CPU build
    assert [item[1] for item in ui.deviceSelector.items] == ["auto", "cpu"]
    assert ui.deviceInfoLabel.text == "PyTorch sees no GPU: segmentation runs on the CPU."
    widget._selectDevice("cuda:1")  # e.g. from a saved scene
    widget.onDeviceSelected(2)
    assert widget._parameterNode.device == "cuda:1"
    assert ui.deviceInfoLabel.text.startswith("GPU 1 is not available to PyTorch")


def test_apply_with_a_tampered_model_shows_one_readable_error(widget, patient_a_volume, coarse_model, scdl_home, dialogs):
    package = _install(coarse_model, scdl_home)
    weights = package / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    widget.refreshModels()
    widget.initializeParameterNode()
    assert widget._parameterNode.inputVolume is patient_a_volume
    assert widget.ui.applyButton.enabled is True

    widget.onApplyButton()
    assert widget.ui.applyButton.text == "Cancel" and widget._timer.isActive()
    _pump(widget, lambda: widget._task is None)
    assert len(dialogs.errors) == 1
    message = dialogs.errors[0]
    assert str(weights) in message and "Fix:" in message and "\n" not in message
    assert widget.ui.statusLabel.text == "Failed." and widget.ui.applyButton.text == "Apply"
    assert _segmentation_nodes() == []


def test_apply_then_cancel_stops_the_child_and_adds_nothing(widget, patient_a_volume, tiny_model, scdl_home, dialogs):
    _install(tiny_model, scdl_home)  # 6 mm: 27 windows, long enough to cancel in the middle
    widget.refreshModels()
    widget.initializeParameterNode()
    widget.onApplyButton()
    run = widget._task[1]
    _pump(widget, lambda: run.job.tracker.phase == "infer")
    widget.onApplyButton()  # the Apply button is Cancel now
    assert widget.ui.statusLabel.text == "Cancelling..."
    _pump(widget, lambda: widget._task is None, timeout=60)
    assert run.job.returncode == 130  # scdl stopped at the next window and exited "cancelled"
    assert any("cancelled: nothing was written." in line for line in widget.ui.logTextEdit.lines)
    assert widget.ui.statusLabel.text == "Cancelled: nothing was added to the scene."
    assert dialogs.errors == [] and _segmentation_nodes() == []
    assert not run.work_dir.exists()


def test_one_confirmation_lists_all_missing_packages(widget, patient_a_volume, monkeypatch, dialogs):
    plan = deps.InstallPlan(torch=">=2.1", packages=["monai>=1.3", "slicerio>=1.1"], torch_found="1.13.1")
    monkeypatch.setattr(widget.logic, "dependencyPlan", lambda: plan)
    installed = []
    monkeypatch.setattr(widget.logic, "installDependencies", lambda p: installed.append(p))
    widget._parameterNode.modelId = "any-model"
    widget.updateDependencyStatus()
    assert widget.ui.dependenciesLabel.text == "Missing: torch>=2.1, monai>=1.3, slicerio>=1.1"
    dialogs.confirm = False
    widget.onApplyButton()
    assert len(dialogs.confirmations) == 1 and installed == [] and widget._task is None
    text = dialogs.confirmations[0]
    assert "torch>=2.1 (found 1.13.1), installed by the PyTorch extension" in text
    assert "  - monai>=1.3\n  - slicerio>=1.1" in text
    dialogs.confirm = True
    monkeypatch.setattr(widget.logic, "installDependencies", lambda p: (_ for _ in ()).throw(RuntimeError("no internet")))
    widget.onApplyButton()
    assert dialogs.errors == ["Installing the Python packages failed: no internet"] and widget._task is None


def test_open_and_clear_the_model_cache(widget, coarse_model, scdl_home, fake_qt, dialogs):
    cached = _install(coarse_model, scdl_home)
    (scdl_home / "models" / "notes.txt").write_text("mine")
    widget.refreshModels()
    widget.onOpenCacheFolder()
    assert fake_qt.QDesktopServices.opened == ["file://" + str(scdl_home / "models")]
    dialogs.confirm = False
    widget.onClearCache()
    assert cached.exists()
    dialogs.confirm = True
    widget.onClearCache()
    assert not cached.exists() and (scdl_home / "models" / "notes.txt").exists()
    assert widget.ui.modelsStatusLabel.text == "Removed 1 item(s); left 1 other file(s) alone."
    assert "coarse-test-model" not in [item[1] for item in widget.ui.modelSelector.items]


def test_import_a_model_file_then_it_is_listed(widget, coarse_model, scdl_home, fake_qt, dialogs):
    fake_qt.QFileDialog.answers.append(str(coarse_model / "manifest.json"))
    widget.onImportModel()
    assert widget._task[0] == "models" and widget._task[1].command[-2:] == ["import", str(coarse_model)]
    _pump(widget, lambda: widget._task is None, timeout=120)
    assert dialogs.errors == []
    assert (scdl_home / "models" / "coarse-test-model" / "manifest.json").is_file()
    assert "coarse-test-model" in [item[1] for item in widget.ui.modelSelector.items]
    assert widget.ui.modelsStatusLabel.text == "Done."


def test_download_asks_consent_and_reports_being_offline(widget, monkeypatch, dialogs):
    monkeypatch.setenv("SCDL_DOWNLOAD_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    ids = [item[1] for item in widget.ui.modelSelector.items]
    widget.onModelSelected(ids.index("scdl-authors-amos-cps"))
    dialogs.confirm = False
    widget.onDownloadModel()
    assert widget._task is None and "Licence: unstated" in dialogs.confirmations[0]
    dialogs.confirm = True
    widget.onDownloadModel()
    assert widget._task[1].command[-4:] == ["download", "scdl-authors-amos-cps", "--progress", "json"]
    _pump(widget, lambda: widget._task is None, timeout=60)
    assert len(dialogs.errors) == 1 and "is this computer offline?" in dialogs.errors[0]
    assert widget.ui.modelsStatusLabel.text == "Failed."


def test_batch_over_a_folder_writes_one_file_per_ct_and_warns_for_non_ct(widget, coarse_model, scdl_home, patient_a_ct,
                                                                         tmp_path, dialogs):
    _install(coarse_model, scdl_home)
    widget.refreshModels()
    source = tmp_path / "cts"
    source.mkdir()
    shutil.copy(patient_a_ct, source / "patient_a.nii.gz")
    shutil.copy(patient_a_ct, source / "patient_a_seg.nii.gz")  # named like a label map: skipped
    import SimpleITK as sitk

    photo = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (20, 32, 32), dtype=np.uint8))
    photo.SetSpacing((6.0, 6.0, 6.0))
    sitk.WriteImage(photo, str(source / "photo.nrrd"))
    out = tmp_path / "out"
    widget.ui.batchSourceSelector.currentIndex = 1
    widget.ui.batchInputDirectoryButton.directory = str(source)
    widget.ui.batchOutputDirectoryButton.directory = str(out)
    widget.onBatchApplyButton()
    batch = widget._task[1]
    assert [item.label for item in batch.items] == ["patient_a.nii.gz", "photo.nrrd"]
    _pump(widget, lambda: widget._task is None)
    assert [item.status for item in batch.items] == ["done", "done"]
    assert (out / "patient_a.seg.nrrd").is_file() and (out / "photo.seg.nrrd").is_file()
    not_ct = [w for item in batch.items for w in item.warnings if "does not look like CT in Hounsfield units" in w]
    assert len(not_ct) == 1 and not_ct[0].startswith(str(source / "photo.nrrd"))
    assert all("random weights" in w for w in batch.items[0].warnings)  # the model card's note, passed on
    assert widget.ui.batchProgressBar.value == 100
    assert widget.ui.batchStatusLabel.text == "2 segmented, 0 failed, 0 cancelled (of 2)"
    assert dialogs.errors == []


def test_results_table_lists_every_organ_found_or_not(widget, patient_a_volume, coarse_model, scdl_home, dialogs):
    """Only found organs become segments; the results table has one row per organ of the model, the missed
    ones "not found" (docs/io.md)."""
    from scdl.labels.table import LabelTable

    _install(coarse_model, scdl_home)
    widget.refreshModels()
    widget.initializeParameterNode()
    widget._parameterNode.device = "cpu"
    widget.onApplyButton()
    _pump(widget, lambda: widget._task is None, timeout=120)
    assert dialogs.errors == []
    node = _segmentation_nodes()[0]
    segmentation = node.GetSegmentation()
    found = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    table = widget.ui.confidenceTable
    rows = [(table.cell(r, 0), table.cell(r, 1)) for r in range(table.rowCount_)]
    names = LabelTable.load("synapse").names
    assert [name for name, _text in rows] == names                     # every organ, in table order
    assert {name for name, text in rows if text == "found"} == found
    missed = [name for name, text in rows if text == "not found"]
    assert missed and len(found) + len(missed) == len(names)          # the random model misses some organs
    for name in missed:                                                # ... and they have no (empty) segment
        assert not segmentation.GetSegmentIdBySegmentName(name)
    assert table.headers == ["Organ", "Result"] and widget.ui.confidenceGroupBox.collapsed is False
    assert widget.ui.warningsLabel.text.endswith("Not found: " + ", ".join(missed) + ".")

    # on request (to paint a missed organ in the Segment Editor): empty segments with the table's names and codes
    added = widget.logic.addEmptySegments(node, "coarse-test-model")
    assert added == missed and segmentation.GetNumberOfSegments() == len(names)
    entry = LabelTable.load("synapse").by_name(missed[0])
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(missed[0]))
    assert segment.GetTerminology() == entry.terminology_string()
    np.testing.assert_allclose(segment.GetColor(), entry.color_float, atol=1e-6)
    assert widget.logic.addEmptySegments(node, "coarse-test-model") == []   # nothing twice


def test_options_are_bound_through_slicer_parameter_names(widget, patient_a_volume):
    """The .ui binds the input, output and uncertainty option by SlicerParameterName: a user edit reaches the
    parameter node, a change of the node reaches the widget (the test stub binds as Slicer's GUI connectors)."""
    from fakeui import user_edit

    widget.initializeParameterNode()                                       # picks the scene's CT
    ui, node = widget.ui, widget._parameterNode
    assert node.inputVolume is patient_a_volume and ui.inputVolumeSelector.currentNode() is patient_a_volume
    user_edit(ui.uncertaintyCheckBox, True)
    assert node.computeUncertainty is True
    node.computeUncertainty = False
    assert ui.uncertaintyCheckBox.checked is False


def test_dicom_seg_batch_option_follows_the_source_and_reaches_the_logic(widget, tmp_path, monkeypatch, dialogs):
    """The batch's "DICOM SEG for DICOM series" box is usable only with a folder source (the SEG references the
    series' files) and is passed to the Logic's ``startBatch(dicomSeg=...)``."""
    ui = widget.ui
    calls = []

    def start_batch(outputFolder, model=None, device="auto", inputFolder=None, dicomSeg=False):
        calls.append((inputFolder, dicomSeg))
        raise ValueError("stop here")           # shown as an error; no job starts

    monkeypatch.setattr(widget.logic, "startBatch", start_batch)
    monkeypatch.setattr(widget, "ensureDependencies", lambda: True)
    widget.initializeParameterNode()
    ui.batchOutputDirectoryButton.directory = str(tmp_path / "out")
    ui.batchInputDirectoryButton.directory = str(tmp_path)
    widget.onBatchSourceChanged(1)
    assert ui.batchDicomSegCheckBox.enabled
    ui.batchSourceSelector.currentIndex = 1
    ui.batchDicomSegCheckBox.checked = True
    widget.onBatchApplyButton()
    widget.onBatchSourceChanged(0)
    assert not ui.batchDicomSegCheckBox.enabled
    ui.batchSourceSelector.currentIndex = 0
    widget.onBatchApplyButton()                 # from the scene: never DICOM SEG, whatever the box says
    assert calls == [(str(tmp_path), True), (None, False)]
    assert dialogs.errors == ["stop here", "stop here"]
