"""SCDLTrain tier 1, scene side without child processes: cases and roles, segments -> model classes (by name,
terminology, the user's correction), export onto the volume grid in the model's numbering (checked against the
core's own name mapping of the original label map), and problems reported per case."""

import csv

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from scdl.labels.mapping import map_label_array
from scdl.labels.table import LabelTable
from SCDLTrain import SCDLTrainLogic
from SCDLTrainLib import scenecohort, segmentmap

LIVER_TERMINOLOGY = ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure~"
                     "SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^")


@pytest.fixture
def logic(slicer_app, scdl_home):
    return SCDLTrainLogic(backend="popen")


def _by_name(cases):
    return {c.name: c for c in cases}


def test_volumes_become_cases_and_the_split_follows_fraction_and_roles(train_scene, logic):
    cases = _by_name(logic.sceneCases(valFraction=0.0))
    assert {n: (c.labeled, c.split) for n, c in cases.items()} == {
        "blockA": (True, "train"), "blockB": (True, "train"), "blockC": (False, "train")}
    # half of the 2 labeled volumes go to validation (seeded choice, the same every time)
    first = _by_name(logic.sceneCases(valFraction=0.5))
    assert sorted(c.split for c in first.values()) == ["train", "train", "val"]
    assert [c.name for c in first.values() if c.split == "val"] == [
        c.name for c in logic.sceneCases(valFraction=0.5) if c.split == "val"]
    # at least one labeled volume stays in training, whatever the fraction
    assert sorted(c.split for c in logic.sceneCases(valFraction=0.9)) == ["train", "train", "val"]
    # roles stored on the volume nodes win over the automatic split
    volume_a, _ = train_scene["blockA"]
    volume_c, _ = train_scene["blockC"]
    logic.setCaseRole(volume_a, "val")
    logic.setCaseRole(volume_c, "exclude")
    roles = _by_name(logic.sceneCases(valFraction=0.0))
    assert (roles["blockA"].split, roles["blockB"].split, roles["blockC"].split) == ("val", "train", "exclude")
    assert volume_a.GetAttribute(scenecohort.ROLE_ATTRIBUTE) == "val"
    logic.setCaseRole(volume_a, "auto")
    assert volume_a.GetAttribute(scenecohort.ROLE_ATTRIBUTE) is None
    with pytest.raises(ValueError):
        logic.setCaseRole(volume_a, "testing")


def test_totalsegmentator_segments_map_to_synapse_classes_by_name(train_scene, logic):
    cases = logic.sceneCases(0.0)
    matches = {m.name: m for m in logic.segmentMatches(cases, logic.targetTable())}
    synapse = LabelTable.load("synapse")
    # TotalSegmentator spelling -> Synapse class value (hand-checked against Resources/Labels/*.csv)
    expected = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 6, "stomach": 7,
                "aorta": 8, "inferior_vena_cava": 9, "portal_vein_and_splenic_vein": 10, "pancreas": 11,
                "adrenal_gland_right": 12, "adrenal_gland_left": 13}
    for name, value in expected.items():
        assert (matches[name].value, matches[name].how) == (value, "name"), name
        assert matches[name].class_name == synapse.by_value(value).name
    assert sorted(matches["liver"].cases) == ["blockA", "blockB"]
    unknown = sorted(n for n, m in matches.items() if m.value is None)
    assert "colon" in unknown and "vertebrae_L1" in unknown and not set(unknown) & set(expected)


def test_terminology_match_and_user_corrections(train_scene, logic):
    _volume, segmentation = train_scene["blockB"]
    content = segmentation.GetSegmentation()
    liver = content.GetSegment(content.GetSegmentIdBySegmentName("liver"))
    liver.SetName("Organ 7")                      # a name nobody knows, but SNOMED CT says liver
    liver.SetTerminology(LIVER_TERMINOLOGY)
    table = logic.targetTable()
    matches = {m.name: m for m in logic.segmentMatches(logic.sceneCases(0.0), table)}
    assert (matches["Organ 7"].value, matches["Organ 7"].how) == (6, "terminology")
    # the user maps a segment to a class (by name or value) or to background (not trained)
    assert segmentmap.parse_class("Left Kidney", table) == 3
    assert segmentmap.parse_class("11", table) == 11
    assert segmentmap.parse_class("background", table) == 0
    with pytest.raises(ValueError, match="not a class of the model"):
        segmentmap.parse_class("brain", table)
    with pytest.raises(ValueError, match="values 1..13"):
        segmentmap.parse_class("99", table)
    overrides = {segmentmap.segment_key("colon"): 7, segmentmap.segment_key("Organ 7"): 0}
    text = segmentmap.overrides_to_json(overrides)
    corrected = {m.name: m for m in logic.segmentMatches(logic.sceneCases(0.0), table,
                                                         segmentmap.overrides_from_json(text))}
    assert (corrected["colon"].value, corrected["colon"].how, corrected["colon"].class_name) == (7, "user", "stomach")
    assert (corrected["Organ 7"].value, corrected["Organ 7"].class_name) == (0, "background")
    assert not corrected["Organ 7"].trained


def test_export_writes_label_maps_on_the_volume_grid_in_the_model_numbering(train_scene, train_blocks, logic, tmp_path):
    result, problems = logic.exportSceneCohort(tmp_path / "run", valFraction=0.5)
    assert {p.code for p in problems} == {"unknown_segments"}            # the non-Synapse TS classes, per case
    assert result.counts() == {"labeled": 1, "unlabeled": 1, "val": 1}
    ts, synapse = LabelTable.load("totalsegmentator_v2"), LabelTable.load("synapse")
    for name in ("blockA", "blockB"):
        case = next(c for c in result.cases if c.name == name)
        ct_path, label_path = train_blocks[name]
        original = sitk.ReadImage(str(label_path))
        expected, unknown = map_label_array(sitk.GetArrayFromImage(original), ts, synapse)   # the core's mapping
        written = sitk.ReadImage(str(case.label))
        assert unknown == []
        assert np.array_equal(sitk.GetArrayFromImage(written), expected), name
        image = sitk.ReadImage(str(case.image))
        for got in (written, image):
            assert got.GetSize() == original.GetSize() == (40, 32, 24)
            np.testing.assert_allclose(got.GetOrigin(), original.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(got.GetSpacing(), (6.0, 6.0, 6.0), atol=1e-6)
            np.testing.assert_allclose(got.GetDirection(), original.GetDirection(), atol=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(sitk.ReadImage(str(ct_path))))
        values, counts = np.unique(expected, return_counts=True)
        assert case.voxels == {int(v): int(n) for v, n in zip(values, counts) if v}
    with result.manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["name"], r["split"], bool(r["label"]), r["labels"]) for r in rows] == [
        (c.name, c.split, c.label is not None, "") for c in result.cases]
    assert rows[2] == {"image": "images/blockC.nrrd", "label": "", "split": "train", "labels": "", "annotated": "",
                       "name": "blockC", "volume_id": train_scene["blockC"][0].GetID()}
    assert result.case_for_row("manifest.csv:3") == rows[1]["name"]
    # nothing of the export is left in the scene (temporary label map nodes and their colour tables)
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0


def test_a_segmentation_with_only_some_organs_annotates_only_those(train_scene, logic, tmp_path):
    """blockA keeps only its liver segment (a liver study): the manifest says so, and the core's check treats
    the other classes as unknown in that case (not background)."""
    from scdl.training.checks import check_cohort
    from scdl.training.cohort import load_manifest

    _va, seg_a = train_scene["blockA"]
    content = seg_a.GetSegmentation()
    for segment_id in [content.GetNthSegmentID(i) for i in range(content.GetNumberOfSegments())]:
        if content.GetSegment(segment_id).GetName() != "liver":
            content.RemoveSegment(segment_id)
    result, _problems = logic.exportSceneCohort(tmp_path / "run", valFraction=0.5)
    with result.manifest.open() as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    synapse = LabelTable.load("synapse")
    assert rows["blockA"]["annotated"] == "liver"
    case_b = next(c for c in result.cases if c.name == "blockB")
    names_b = [synapse.by_value(v).name for v in case_b.annotated]
    assert "liver" in names_b and len(names_b) > 5
    assert rows["blockB"]["annotated"] in ("", ";".join(names_b))
    report, _ = check_cohort(load_manifest(result.manifest), synapse, framework="cps",
                             init_classes={e.value for e in synapse.entries if e.value})
    facts = {c["name"]: c for c in report.cases}
    assert facts["blockA"]["annotated_names"] == ["liver"] and facts["blockA"]["partial"]
    assert "liver" in facts["blockB"]["annotated_names"]


def test_problems_are_reported_per_case(train_scene, logic, tmp_path):
    # blockA: every segment renamed to something unknown -> no model class at all (error)
    _va, seg_a = train_scene["blockA"]
    content = seg_a.GetSegmentation()
    for index in range(content.GetNumberOfSegments()):
        content.GetNthSegment(index).SetName(f"Segment_{index + 1}")
    # blockB: its segmentation is moved 2 m away (wrong patient position) -> outside its volume (error)
    _vb, seg_b = train_scene["blockB"]
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 2000.0)
    transform.SetMatrixTransformToParent(matrix)
    seg_b.SetAndObserveTransformNodeID(transform.GetID())
    # blockC: unlabeled but marked for validation (error)
    logic.setCaseRole(train_scene["blockC"][0], "val")
    result, problems = logic.exportSceneCohort(tmp_path / "run", valFraction=0.0)
    by_case = {}
    for problem in problems:
        by_case.setdefault(problem.case, []).append((problem.severity, problem.code))
    assert ("error", "no_model_class") in by_case["blockA"] and ("warning", "unknown_segments") in by_case["blockA"]
    assert ("error", "outside_volume") in by_case["blockB"]
    assert by_case["blockC"] == [("error", "val_without_labels")]
    message = next(p for p in problems if p.code == "unknown_segments" and p.case == "blockA").message
    assert message.startswith(f"{content.GetNumberOfSegments()} segment(s) match no class") and "Segment_1" in message
    assert all(p.fix for p in problems)
    # the cases without usable labels are not exported as labeled
    assert [c.name for c in result.cases if c.label is not None] == []


def test_a_segmentation_partly_outside_its_volume_is_a_warning(train_scene, logic, tmp_path):
    _vb, seg_b = train_scene["blockB"]
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(2, 3, 100.0)                # 100 mm up: the block is 144 mm high
    transform.SetMatrixTransformToParent(matrix)
    seg_b.SetAndObserveTransformNodeID(transform.GetID())
    _result, problems = logic.exportSceneCohort(tmp_path / "run", valFraction=0.0)
    partly = [p for p in problems if p.code == "partly_outside"]
    assert partly and {p.case for p in partly} == {"blockB"} and all(p.severity == "warning" for p in partly)
    assert any("'liver'" in p.message for p in partly)


def test_an_empty_scene_is_one_clear_error(slicer_app, logic, tmp_path):
    result, problems = logic.exportSceneCohort(tmp_path / "run")
    assert result is None
    assert [(p.severity, p.code) for p in problems] == [("error", "no_cases")]
    assert not (tmp_path / "run" / "cohort").exists()
