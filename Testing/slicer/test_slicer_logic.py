"""Tier 1: the Logic end to end - patient A volume node -> files -> a real ``python -m scdl segment`` child
-> segmentation node, checked in the scene and again with slicerio on the file the child wrote."""

import shutil

import numpy as np
import pytest
import slicer
import slicerio
import vtk

from harness import ijk_to_ras
from scdl.labels.table import LabelTable
from SCDLSegment import SCDLSegmentLogic

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def run(slicer_app_module, coarse_model, patient_a_ct, tmp_path_factory):
    """One segmentation of patient A (with uncertainty, under a study and a transform), shared by the tests."""
    harness = slicer_app_module
    volume = harness.volumes.AddArchetypeVolume(str(patient_a_ct), "patientA", 0)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient A"), "CT study")
    sh.CreateItem(study, volume)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "table shift")
    volume.SetAndObserveTransformNodeID(transform.GetID())

    logic = SCDLSegmentLogic()
    job = logic.startSegmentation(volume, model=str(coarse_model), device="cpu", uncertainty=True)
    lines = []
    job.job.wait(timeout=240, on_line=lines.append)
    kept = tmp_path_factory.mktemp("child_output") / "segmentation.seg.nrrd"
    shutil.copy(job.output_path, kept)  # the child's file, for the slicerio check (the run deletes its folder)
    result = logic.finishSegmentation(job)
    return {"volume": volume, "study": study, "transform": transform, "job": job, "result": result, "lines": lines,
            "file": kept, "sh": sh}


def test_progress_lines_were_parsed_in_phase_order(run):
    tracker = run["job"].job.tracker
    phases = [line.data["phase"] for line in run["lines"] if line.kind == "progress"]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == ["read", "preprocess", "infer", "postprocess", "write"]
    assert tracker.finished and tracker.percent == 100.0 and tracker.error is None
    assert tracker.result["output"] == str(run["job"].output_path)
    assert run["job"].job.returncode == 0


def test_segments_have_table_names_colours_and_terminology(run):
    node = run["result"].segmentation_node
    segmentation = node.GetSegmentation()
    table = LabelTable.load("synapse")
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names and set(names) <= set(table.names)
    for index, name in enumerate(names):
        segment, entry = segmentation.GetNthSegment(index), table.by_name(name)
        assert segment.GetTerminology() == entry.terminology_string()
        np.testing.assert_allclose(segment.GetColor(), entry.color_float, atol=1e-6)
    report = run["result"].report
    assert sorted(report.segment_names + report.missing) == sorted(table.names)
    assert node.GetName() == "patientA segmentation" and node.GetScene() is slicer.mrmlScene


def test_result_is_on_the_input_grid_under_its_study_and_transform(run):
    node, volume = run["result"].segmentation_node, run["volume"]
    segmentation = node.GetSegmentation()
    geometry = segmentation.GetConversionParameter("Reference image geometry").split(";")
    matrix = np.array([float(v) for v in geometry[:16]]).reshape(4, 4)
    np.testing.assert_allclose(matrix, ijk_to_ras(volume), atol=1e-4)
    assert geometry[16:22] == ["0", "121", "0", "100", "0", "111"]
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetNthSegmentID(0), labelmap)
    image_to_world = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(image_to_world)
    np.testing.assert_allclose([[image_to_world.GetElement(r, c) for c in range(4)] for r in range(4)], ijk_to_ras(volume), atol=1e-4)
    assert node.GetTransformNodeID() == run["transform"].GetID()
    sh = run["sh"]
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == run["study"]
    assert segmentation.ContainsRepresentation("Closed surface")
    assert node.GetDisplayNode().GetVisibility3D()


def test_child_file_checked_with_slicerio(run):
    """Independent reader: names, colours, codes, IJK->LPS and voxels of the child's .seg.nrrd."""
    seg = slicerio.read_segmentation(str(run["file"]))
    table = LabelTable.load("synapse")
    np.testing.assert_allclose(LPS_TO_RAS @ seg["ijkToLPS"], ijk_to_ras(run["volume"]), atol=1e-4)
    assert seg["voxels"].shape == (122, 101, 112)  # IJK
    node = run["result"].segmentation_node
    for segment in seg["segments"]:
        entry = table.by_name(segment["name"])
        assert segment["labelValue"] == entry.value
        np.testing.assert_allclose(segment["color"], entry.color_float, atol=1e-5)
        assert segment["terminology"]["type"][:2] == [entry.type.scheme, entry.type.value]
        # the node holds exactly the voxels of the file (slicerio IJK -> Slicer KJI)
        in_file = (seg["voxels"] == segment["labelValue"]).transpose(2, 1, 0)
        in_node = slicer.util.arrayFromSegmentBinaryLabelmap(
            node, node.GetSegmentation().GetSegmentIdBySegmentName(segment["name"]), run["volume"])
        assert np.array_equal(in_node.astype(bool), in_file)


def test_uncertainty_overlay_and_per_organ_confidence(run):
    result, volume = run["result"], run["volume"]
    uncertainty = result.uncertainty_node
    np.testing.assert_allclose(ijk_to_ras(uncertainty), ijk_to_ras(volume), atol=1e-4)
    values = slicer.util.arrayFromVolume(uncertainty)
    assert values.shape == (112, 101, 122) and 0.0 <= values.min() and values.max() <= 1.0 + 1e-6
    composite = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == uncertainty.GetID()
    assert composite.GetBackgroundVolumeID() == volume.GetID()
    table = LabelTable.load("synapse")
    assert list(result.confidence) == table.names  # every organ reported, in table order
    present = set(result.report.segment_names)
    for name, value in result.confidence.items():
        assert (value is not None) == (name in present)
        assert value is None or 0.0 <= value <= 1.0


def test_warnings_reach_the_result(run):
    warnings = run["result"].warnings
    assert warnings == ["model coarse-test-model: random weights: for tests only"]  # the card's note; patient A is CT


def test_nothing_left_behind(run):
    assert not run["job"].work_dir.exists()
    assert run["volume"].GetStorageNode().GetFileName().endswith("example_ct.nii.gz")


def test_only_found_organs_are_segments_in_the_file_and_the_scene(run):
    """docs/io.md: the .seg.nrrd holds one segment per organ FOUND (none empty); the others are reported missing."""
    seg = slicerio.read_segmentation(str(run["file"]))
    in_file = [segment["name"] for segment in seg["segments"]]
    for segment in seg["segments"]:
        assert np.count_nonzero(seg["voxels"] == segment["labelValue"]) > 0
    report = run["result"].report
    assert sorted(in_file) == sorted(report.segment_names)
    assert report.organs == LabelTable.load("synapse").names and not set(report.missing) & set(in_file)
