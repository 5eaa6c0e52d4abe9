"""Writing label maps: NIfTI/NRRD on the input grid, and .seg.nrrd that slicerio and Slicer's own reader accept
with names, colours, SNOMED CT terminology and the right geometry (real data: patient A)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from scdl.errors import ScdlError
from scdl.io.geometry import ijk_to_lps, ijk_to_ras
from scdl.io.image import read_label_map
from scdl.io.writers import write_image, write_label_map
from scdl.labels.mapping import map_label_array
from scdl.labels.table import LabelTable


@pytest.fixture(scope="module")
def synapse() -> LabelTable:
    return LabelTable.load("synapse")


@pytest.fixture(scope="module")
def synapse_map(patient_a_seg: Path, synapse: LabelTable) -> sitk.Image:
    """Patient A's TotalSegmentator labels mapped to Synapse values, on the CT grid."""
    ts_img = read_label_map(patient_a_seg)
    mapped, _ = map_label_array(sitk.GetArrayFromImage(ts_img), LabelTable.load("totalsegmentator_v2"), synapse)
    img = sitk.GetImageFromArray(mapped)
    img.CopyInformation(ts_img)
    return img


def _liver_voxel(img: sitk.Image, value: int = 6) -> tuple[int, int, int]:
    z, y, x = np.argwhere(sitk.GetArrayViewFromImage(img) == value)[0]
    return int(x), int(y), int(z)


def test_seg_nrrd_read_back_by_slicerio(synapse_map: sitk.Image, synapse: LabelTable, tmp_path: Path) -> None:
    path = write_label_map(synapse_map, tmp_path / "out.seg.nrrd", synapse)
    seg = slicerio.read_segmentation(str(path))
    present = sorted(int(v) for v in np.unique(sitk.GetArrayViewFromImage(synapse_map)) if v)
    assert present == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]  # all Synapse organs but the oesophagus
    segments = {s["labelValue"]: s for s in seg["segments"]}
    assert sorted(segments) == present
    for value in present:
        entry, segment = synapse.by_value(value), segments[value]
        assert segment["name"] == entry.name
        np.testing.assert_allclose(segment["color"], np.array(entry.color) / 255.0, atol=1e-6)
        term = segment["terminology"]
        assert term["contextName"] == "Segmentation category and type - DICOM master list"
        assert term["category"] == ["SCT", "123037004", "Anatomical Structure"]
        assert term["type"] == entry.type.to_list()
        assert term.get("typeModifier") == (entry.modifier.to_list() if entry.modifier else None)
    assert segments[2]["terminology"]["typeModifier"] == ["SCT", "24028007", "Right"]
    assert segments[6]["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    # geometry: slicerio works in IJK order and LPS
    np.testing.assert_allclose(seg["ijkToLPS"], ijk_to_lps(synapse_map), atol=1e-9)
    voxels = seg["voxels"]
    assert voxels.shape == synapse_map.GetSize()
    assert np.array_equal(voxels, sitk.GetArrayViewFromImage(synapse_map).transpose(2, 1, 0))
    i, j, k = _liver_voxel(synapse_map)
    assert voxels[i, j, k] == 6
    np.testing.assert_allclose((seg["ijkToLPS"] @ [i, j, k, 1])[:3], synapse_map.TransformIndexToPhysicalPoint((i, j, k)))
    # and it reads back as the same label map
    back = read_label_map(path, reference=synapse_map)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(synapse_map))


def test_seg_nrrd_oblique_geometry(synapse_map: sitk.Image, synapse: LabelTable, tmp_path: Path) -> None:
    img = sitk.Image(synapse_map)
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    img.SetDirection((c, -s, 0.0, s * 0.9, c * 0.9, -np.sqrt(0.19), s * np.sqrt(0.19), c * np.sqrt(0.19), 0.9))
    img.SetOrigin((-10.25, 33.5, 1200.125))
    img.SetSpacing((0.75, 0.8, 2.5))
    seg = slicerio.read_segmentation(str(write_label_map(img, tmp_path / "oblique.seg.nrrd", synapse)))
    i, j, k = _liver_voxel(img)
    assert seg["voxels"][i, j, k] == 6
    np.testing.assert_allclose((seg["ijkToLPS"] @ [i, j, k, 1])[:3], img.TransformIndexToPhysicalPoint((i, j, k)), atol=1e-9)


def test_seg_nrrd_loads_in_slicer_core(synapse_map: sitk.Image, synapse: LabelTable, tmp_path: Path) -> None:
    """Slicer's own segmentation reader (slicer-core wheel) sees the names, colours, terminology and grid."""
    import slicer_core as slicer  # slicer-core wheel (test dependency); the core package never imports it
    import vtk

    path = write_label_map(synapse_map, tmp_path / "slicer.seg.nrrd", synapse)
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 12
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        entry = synapse.by_value(segment.GetLabelValue())
        assert segment.GetName() == entry.name
        np.testing.assert_allclose(segment.GetColor(), np.array(entry.color) / 255.0, atol=1e-6)
        tag = vtk.reference("")
        assert segment.GetTag("TerminologyEntry", tag)
        assert str(tag) == entry.terminology_string()
        parsed = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(str(tag), parsed)
        assert parsed.GetTypeObject().GetCodeValue() == entry.type.value
        assert logic.SerializeTerminologyEntry(parsed) == entry.terminology_string()
    labelmap = segmentation.GetNthSegment(0).GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(ras, ijk_to_ras(synapse_map), atol=1e-6)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha"])
def test_label_map_formats_keep_grid_and_values(synapse_map: sitk.Image, tmp_path: Path, ext: str) -> None:
    path = write_label_map(sitk.Cast(synapse_map, sitk.sitkInt32), tmp_path / f"labels{ext}")
    back = read_label_map(path)
    assert back.GetPixelID() == sitk.sitkUInt8
    assert back.GetOrigin() == synapse_map.GetOrigin() and back.GetDirection() == synapse_map.GetDirection()
    assert back.GetSpacing() == synapse_map.GetSpacing()
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(synapse_map))


def test_values_outside_the_table_get_generic_segments(synapse: LabelTable, tmp_path: Path) -> None:
    img = sitk.Image(8, 8, 8, sitk.sitkUInt16)
    img[1, 1, 1] = 6
    img[2, 2, 2] = 300
    seg = slicerio.read_segmentation(str(write_label_map(img, tmp_path / "x.seg.nrrd", synapse)))
    names = {s["labelValue"]: s["name"] for s in seg["segments"]}
    assert names == {6: "liver", 300: "Label 300"}
    assert "terminology" not in [s for s in seg["segments"] if s["labelValue"] == 300][0]


def test_failed_write_leaves_no_partial_file(synapse_map: sitk.Image, synapse: LabelTable, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.seg.nrrd"
    target.write_bytes(b"previous result")

    def broken(file, segmentation, **kwargs):
        Path(file).write_bytes(b"NRRD0004\npartial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(slicerio, "write_segmentation", broken)
    with pytest.raises(ScdlError, match="disk is full"):
        write_label_map(synapse_map, target, synapse)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.seg.nrrd"]

    def broken_sitk(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise RuntimeError("ITK ERROR: could not write")

    monkeypatch.setattr(sitk, "WriteImage", broken_sitk)
    for name in ("labels.nii.gz", "labels.nhdr"):
        with pytest.raises(ScdlError, match="could not be written"):
            write_label_map(synapse_map, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.seg.nrrd"]


def test_bad_output_requests(synapse_map: sitk.Image, tmp_path: Path) -> None:
    with pytest.raises(ScdlError, match="cannot write a label map as .png") as err:
        write_label_map(synapse_map, tmp_path / "labels.png")
    assert ".seg.nrrd" in err.value.fix
    with pytest.raises(ScdlError, match="cannot write an image as .seg.nrrd"):
        write_image(synapse_map, tmp_path / "image.seg.nrrd")
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(ScdlError, match="is a folder"):
        write_label_map(synapse_map, tmp_path / "folder.nii.gz")
    with pytest.raises(TypeError):
        write_label_map(sitk.GetArrayFromImage(synapse_map), tmp_path / "a.nii.gz")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer pixel type"):
        write_label_map(sitk.Cast(synapse_map, sitk.sitkFloat32), tmp_path / "a.nii.gz")
