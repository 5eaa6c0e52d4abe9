"""Scene <-> files (Logic helpers) against a real MRML scene, with the real patient A CT."""

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from harness import ijk_to_ras
from scdl.io.writers import write_label_map
from scdl.labels.table import LabelTable
from SCDLSlicerLib import sceneio



def _label_file(tmp_path, ct_path, values_at):
    """A .seg.nrrd on the CT's grid written by the core (what ``scdl segment`` writes): ``values_at`` maps a
    label value to a (z, y, x) slice box."""
    ct = sitk.ReadImage(str(ct_path))
    labels = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    for value, box in values_at.items():
        labels[box] = value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct)
    return write_label_map(image, tmp_path / "result.seg.nrrd", table=LabelTable.load("synapse"))


def test_write_volume_keeps_voxels_and_geometry_and_leaves_the_node_alone(slicer_app, patient_a_volume, tmp_path):
    storage_before = patient_a_volume.GetStorageNode().GetFileName()
    path = sceneio.write_volume(patient_a_volume, tmp_path / "input.nrrd")
    again = slicer_app.volumes.AddArchetypeVolume(str(path), "again", 0)
    assert np.array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(patient_a_volume))
    np.testing.assert_allclose(ijk_to_ras(again), ijk_to_ras(patient_a_volume), atol=1e-4)
    assert patient_a_volume.GetStorageNode().GetFileName() == storage_before  # still points at the user's file
    # the file as the child reads it (SimpleITK, LPS) has the same physical grid
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetSpacing(), (3.0, 3.0, 3.0))
    ras_origin = ijk_to_ras(patient_a_volume)[:3, 3]
    np.testing.assert_allclose(image.GetOrigin(), ras_origin * [-1, -1, 1], atol=1e-3)


def test_write_volume_refuses_label_maps(slicer_app, tmp_path):
    labelmap = slicer.util.addVolumeFromArray(np.zeros((4, 4, 4), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(sceneio.SceneError, match="scalar .CT. volume, not vtkMRMLLabelMapVolumeNode"):
        sceneio.write_volume(labelmap, tmp_path / "x.nrrd")
    with pytest.raises(sceneio.SceneError, match="not nothing"):
        sceneio.write_volume(None, tmp_path / "x.nrrd")
    assert not (tmp_path / "x.nrrd").exists()


def test_ct_plausibility(slicer_app, patient_a_volume):
    assert sceneio.ct_plausibility(patient_a_volume) is None  # -1207..3382 HU
    photo = slicer.util.addVolumeFromArray(np.arange(64, dtype=np.uint8).reshape(4, 4, 4) * 4, name="photo")
    warning = sceneio.ct_plausibility(photo)
    assert "'photo' does not look like a CT" in warning and "0..252" in warning
    mr = slicer.util.addVolumeFromArray(np.linspace(0, 1800, 64, dtype=np.float32).reshape(4, 4, 4), name="mr")
    assert "0..1800" in sceneio.ct_plausibility(mr)
    from SCDLSegment import SCDLSegmentLogic

    assert SCDLSegmentLogic().checkInput(photo) == [warning] and SCDLSegmentLogic().checkInput(patient_a_volume) == []


def test_loaded_result_gets_table_colours_terminology_geometry_and_study(slicer_app, patient_a_volume, patient_a_ct, tmp_path):
    path = _label_file(tmp_path, patient_a_ct, {6: np.s_[40:60, 30:60, 20:70], 1: np.s_[70:80, 40:50, 80:90]})
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient A"), "CT study")
    sh.CreateItem(study, patient_a_volume)

    node = sceneio.load_segmentation(path, "organs", patient_a_volume)
    table = LabelTable.load("synapse")
    report = sceneio.apply_label_table(node, sceneio.label_infos_from_table(table))
    sceneio.place_in_subject_hierarchy(node, patient_a_volume)
    sceneio.show_segmentation(node, patient_a_volume)

    segmentation = node.GetSegmentation()
    assert sorted(report.segment_names) == ["liver", "spleen"]
    assert report.colors_set == [] and report.terminology_set == []  # the core wrote them right already
    assert len(report.missing) == 11 and "gallbladder" in report.missing
    for name in ("liver", "spleen"):
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        entry = table.by_name(name)
        assert segment.GetTerminology() == entry.terminology_string()
        np.testing.assert_allclose(segment.GetColor(), entry.color_float, atol=1e-6)
    # voxels: the liver box, at the same place in Slicer's KJI array
    liver = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetSegmentIdBySegmentName("liver"), patient_a_volume)
    expected = np.zeros_like(liver)
    expected[40:60, 30:60, 20:70] = 1
    assert np.array_equal(liver, expected)
    # geometry, subject hierarchy, display, storage
    geometry = segmentation.GetConversionParameter("Reference image geometry")
    assert geometry.startswith("3;0;0;-177.956") and geometry.endswith(";0;121;0;100;0;111;")
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    display = node.GetDisplayNode()
    assert display.GetVisibility2D() and display.GetVisibility3D()
    assert segmentation.ContainsRepresentation("Closed surface")
    assert node.GetStorageNode() is None
    composite = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceCompositeNode")
    assert composite.GetBackgroundVolumeID() == patient_a_volume.GetID()


def test_apply_label_table_repairs_colour_name_and_terminology(slicer_app):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation = node.GetSegmentation()
    segment_id = segmentation.AddEmptySegment("Segment_6", "Label 6", [1.0, 1.0, 1.0])
    segmentation.GetSegment(segment_id).SetLabelValue(6)
    segmentation.GetSegment(segment_id).SetTerminology("~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^~~^^~^^")
    liver = LabelTable.load("synapse").by_value(6)
    report = sceneio.apply_label_table(node, sceneio.label_infos_from_table(LabelTable.load("synapse")))
    segment = segmentation.GetSegment(segment_id)
    assert segment.GetName() == "liver"  # matched by label value, renamed
    assert report.colors_set == ["liver"] and report.terminology_set == ["liver"]  # context names were missing
    assert segment.GetTerminology() == liver.terminology_string()
    np.testing.assert_allclose(segment.GetColor(), liver.color_float, atol=1e-6)


def test_label_table_codes_are_in_slicer_terminology_contexts(slicer_app):
    """Every coded label of the bundled Synapse/AMOS tables is found by Slicer's terminology logic in the
    context its TerminologyEntry names (excerpts of Slicer's own contexts, see data/README.md)."""
    logic = slicer_app.terminologies
    assert "Segmentation category and type - DICOM master list" in slicer_app.loaded_terminology_names()

    def codes(count, nth):
        found = []
        for index in range(count):
            item = slicer.vtkSlicerTerminologyType()
            assert nth(index, item)
            found.append((item.GetCodingSchemeDesignator(), item.GetCodeValue()))
        return found

    checked = 0
    for table_name in ("synapse", "amos"):
        for label in sceneio.label_infos_from_table(LabelTable.load(table_name)):
            entry = slicer.vtkSlicerTerminologyEntry()
            assert logic.DeserializeTerminologyEntry(label.terminology, entry), label.name
            context, category, type_ = entry.GetTerminologyContextName(), entry.GetCategoryObject(), entry.GetTypeObject()
            types = codes(logic.GetNumberOfTypesInTerminologyCategory(context, category),
                          lambda i, t: logic.GetNthTypeInTerminologyCategory(context, category, i, t))
            wanted = (type_.GetCodingSchemeDesignator(), type_.GetCodeValue())
            assert wanted in types, f"{table_name}: {label.name} {wanted} not in {context}"
            modifier = entry.GetTypeModifierObject()
            if modifier.GetCodeValue():
                index = types.index(wanted)
                known = slicer.vtkSlicerTerminologyType()
                logic.GetNthTypeInTerminologyCategory(context, category, index, known)
                modifiers = codes(logic.GetNumberOfTypeModifiersInTerminologyType(context, category, known),
                                  lambda i, t: logic.GetNthTypeModifierInTerminologyType(context, category, known, i, t))
                assert (modifier.GetCodingSchemeDesignator(), modifier.GetCodeValue()) in modifiers, label.name
            checked += 1
    assert checked == 13 + 15


def test_terminology_codes_ignore_meanings_and_context():
    a = "ctx~SCT^123037004^Anatomical Structure~SCT^64033007^Kidney~SCT^24028007^Right~anat~^^~^^"
    b = "other~SCT^123037004^x~SCT^64033007^y~SCT^24028007^z~~^^~^^"
    assert sceneio.terminology_codes(a) == sceneio.terminology_codes(b) == (
        ("SCT", "123037004"), ("SCT", "64033007"), ("SCT", "24028007"), None, None)
    assert sceneio.terminology_codes("") == (None,) * 5


def test_output_into_an_existing_segmentation_replaces_its_segments(slicer_app, patient_a_volume, patient_a_ct, tmp_path):
    target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    target.GetSegmentation().AddEmptySegment("old", "old")
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    path = _label_file(tmp_path, patient_a_ct, {3: np.s_[10:20, 10:20, 10:20]})
    node = sceneio.load_segmentation(path, "ignored", patient_a_volume, target_node=target)
    assert node is target and node.GetName() == "my segmentation"
    names = [node.GetSegmentation().GetNthSegment(i).GetName() for i in range(node.GetSegmentation().GetNumberOfSegments())]
    assert names == ["left kidney"]
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before  # the temporary node and its helpers are gone


def test_uncertainty_overlay(slicer_app, patient_a_volume, tmp_path):
    values = np.zeros(slicer.util.arrayFromVolume(patient_a_volume).shape, dtype=np.float32)
    values[50:60, 40:60, 40:80] = 0.8
    unc = slicer.util.addVolumeFromArray(values, name="tmp")
    unc.CopyOrientation(patient_a_volume)
    path = sceneio.write_volume(unc, tmp_path / "uncertainty.nrrd")
    slicer.mrmlScene.RemoveNode(unc)

    node = sceneio.load_uncertainty(path, "patientA uncertainty", patient_a_volume)
    display = node.GetDisplayNode()
    assert display.GetColorNodeID() == sceneio.UNCERTAINTY_FALLBACK_COLOR_NODE_ID  # no colour files here: Iron
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 0.8))
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.04)
    np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(patient_a_volume), atol=1e-4)
    for name in ("Red", "Yellow", "Green"):
        composite = slicer.mrmlScene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode")
        assert composite.GetForegroundVolumeID() == node.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(sceneio.UNCERTAINTY_OPACITY)
    assert node.GetStorageNode() is None


def test_scene_volumes_and_file_stems(slicer_app, patient_a_volume):
    slicer.util.addVolumeFromArray(np.zeros((2, 2, 2), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    assert sceneio.scene_volumes() == [patient_a_volume]
    assert sceneio.safe_file_stem('CT: "arterial" 1/2') == "CT___arterial__1_2"
    assert sceneio.safe_file_stem("...") == "volume"


def test_results_rows_list_every_organ_in_table_order():
    from SCDLSegmentLib.results import organ_rows, result_column_title

    report = sceneio.LoadReport(segment_names=["spleen", "liver"], missing=["kidney_right"],
                                organs=["spleen", "kidney_right", "liver"])
    assert organ_rows(report) == [("spleen", "found"), ("kidney_right", "not found"), ("liver", "found")]
    confidence = {"spleen": 0.91234, "kidney_right": None, "liver": 0.5}
    assert organ_rows(report, confidence) == [("spleen", "0.912"), ("kidney_right", "not found"), ("liver", "0.500")]
    assert result_column_title(confidence) == "Confidence" and result_column_title({}) == "Result"
