"""``scdl segment DICOM_FOLDER -o seg.dcm``: a DICOM Segmentation (highdicom) that references its source series.

The source is a block of the bundled sample CT (patient B: 320 x 300 x 10 voxels) written as a DICOM series by
SimpleITK/GDCM (``dicom_series.py``: independent of pydicom and highdicom), read back with pydicom: SOP class,
BINARY type, one frame per (segment, slice) where the segment has voxels, each frame on the source slice its
ReferencedSOPInstanceUID names, the voxels of every segment equal to the label map's, SNOMED CT codes from the
label table, the model as the algorithm; ``dciodvfy`` (dicom3tools) finds no error. A non-DICOM input, and a
DICOM series without UIDs, are refused in one line before any work.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_series import write_ct_series
from scdl.cli.main import main

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
BLOCK = (slice(100, 420), slice(100, 400), slice(4, 14))       # x, y, z of the sample CT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sample_block(repo_root):
    """(CT block, its label map) from the bundled sample: patient B, Synapse numbering."""
    folder = repo_root / "Resources" / "Sample"
    ct = sitk.ReadImage(str(folder / "sample_ct.nii.gz"))[BLOCK]
    labels = sitk.ReadImage(str(folder / "sample_labels.nii.gz"))[BLOCK]
    return ct, labels


@pytest.fixture(scope="module")
def ct_series(sample_block, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "series"
    files = write_ct_series(sample_block[0], folder)
    return folder, files


def _frames_as_labels(ds, files) -> tuple[np.ndarray, dict[str, int]]:
    """The DICOM SEG back as a label map on the source grid (segment number per voxel) and name -> number.

    Each frame is placed on the source slice whose SOP Instance UID it references; that slice's position must be
    the frame's Image Position (Patient)."""
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    by_uid = {str(s.SOPInstanceUID): (k, s) for k, s in enumerate(sources)}
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    out = np.zeros((len(files), rows, cols), np.uint8)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), rows, cols)
    shared = ds.SharedFunctionalGroupsSequence[0]
    for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        k, source = by_uid[str(ref.ReferencedSOPInstanceUID)]
        assert str(ref.ReferencedSOPClassUID) == str(source.SOPClassUID)
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in source.ImagePositionPatient], atol=1e-3)
        ident = frame.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        number = int(ident[0].ReferencedSegmentNumber)      # per frame, or shared when there is one segment
        mask = pixels[index] > 0
        assert not (out[k][mask] != 0).any()            # segments do not overlap (they came from one label map)
        out[k][mask] = number
    names = {str(s.SegmentLabel): int(s.SegmentNumber) for s in ds.SegmentSequence}
    return out, names


def _check_against_label_map(ds, files, labels: np.ndarray, table) -> None:
    """Every segment holds exactly the voxels of its organ in ``labels`` (z, y, x); frames only where present."""
    back, names = _frames_as_labels(ds, files)
    present = [int(v) for v in np.unique(labels) if v]
    assert sorted(names) == sorted(table.by_value(v).name for v in present)
    for value in present:
        number = names[table.by_value(value).name]
        assert int((back == number).sum()) == int((labels == value).sum())
        assert np.array_equal(back == number, labels == value)
    frames_needed = sum(int((labels == v).any(axis=(1, 2)).sum()) for v in present)
    assert int(ds.NumberOfFrames) == frames_needed


def _dciodvfy_errors(path) -> list[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_segment_writes_a_dicom_seg_on_the_source_slices(ct_series, tiny_model, tmp_path, capsys):
    from scdl.labels.table import LabelTable
    from scdl.models.package import ModelPackage

    folder, files = ct_series
    seg_path, nifti_path = tmp_path / "seg.dcm", tmp_path / "labels.nii.gz"
    args = ["--model", str(tiny_model), "--device", "cpu", "--progress", "none"]
    assert main(["segment", str(folder), "-o", str(seg_path), *args]) == 0
    assert main(["segment", str(folder), "-o", str(nifti_path), *args]) == 0     # the same labels, as NIfTI
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti_path)))
    assert labels.any()
    ds = pydicom.dcmread(seg_path)
    assert ds.SOPClassUID == SEGMENTATION_STORAGE and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.PatientID == first.PatientID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    card = ModelPackage.load(tiny_model).card
    for segment in ds.SegmentSequence:
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == card["id"] and algorithm.AlgorithmVersion == str(card["version"])
    _check_against_label_map(ds, files, labels, LabelTable.load("synapse"))
    assert not list(tmp_path.glob(".*partial*"))


def test_writer_carries_the_label_tables_codes(ct_series, sample_block, tmp_path):
    """The sample's own labels (8 organs, one with laterality) through the writer: codes, names, voxels."""
    from scdl.io.image import read_ct
    from scdl.io.writers import write_label_map
    from scdl.labels.table import LabelTable

    folder, files = ct_series
    ct = read_ct(folder)
    labels = sitk.Cast(sample_block[1], sitk.sitkUInt8)
    labels.CopyInformation(ct)                  # the block's grid as read back from DICOM (float32 round trip)
    table = LabelTable.load("synapse")
    path = write_label_map(labels, tmp_path / "sample.dcm", table, source_files=[str(f) for f in files],
                           model={"id": "some-model", "version": "2.1.0"})
    ds = pydicom.dcmread(path)
    arr = sitk.GetArrayFromImage(labels)
    _check_against_label_map(ds, files, arr, table)
    assert len(ds.SegmentSequence) >= 6
    for segment in ds.SegmentSequence:
        entry = table.by_name(str(segment.SegmentLabel))
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == (entry.category.scheme, entry.category.value)
        assert (kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning) == \
            (entry.type.scheme, entry.type.value, entry.type.meaning)
        modifier = kind.get("SegmentedPropertyTypeModifierCodeSequence")
        if entry.modifier is None:
            assert not modifier
        else:
            assert (modifier[0].CodeValue, modifier[0].CodeMeaning) == (entry.modifier.value, entry.modifier.meaning)
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("some-model", "2.1.0")
    adrenal = next(s for s in ds.SegmentSequence if s.SegmentLabel == "right adrenal gland")
    assert adrenal.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning \
        == "Right"


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (Debian package dicom3tools) is not installed: apt-get install dicom3tools")
def test_dciodvfy_finds_no_error(ct_series, sample_block, tmp_path):
    from scdl.io.image import read_ct
    from scdl.io.writers import write_label_map
    from scdl.labels.table import LabelTable

    folder, files = ct_series
    labels = sitk.Cast(sample_block[1], sitk.sitkUInt8)
    labels.CopyInformation(read_ct(folder))
    path = write_label_map(labels, tmp_path / "sample.dcm", LabelTable.load("synapse"),
                           source_files=[str(f) for f in files], model={"id": "some-model", "version": "2.1.0"})
    assert _dciodvfy_errors(path) == []


def test_non_dicom_input_is_refused_before_any_work(repo_root, tmp_path, capsys):
    out = tmp_path / "seg.dcm"
    ct = repo_root / "Resources" / "Sample" / "sample_ct.nii.gz"
    # an unusable --model: the refusal comes first, before the model is even looked at
    assert main(["segment", str(ct), "-o", str(out), "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}: ")
    assert "DICOM SEG must reference the source DICOM images" in err[0]
    assert ".seg.nrrd" in err[0] and "NIfTI" in err[0] and "DICOM folder" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_dicom_without_uids_is_refused(ct_series, tiny_model, tmp_path, capsys):
    """An anonymised series whose files lost their Study/Series Instance UIDs (like patient B's test copy)."""
    folder, files = ct_series
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = ""
        ds.SeriesInstanceUID = ""
        ds.save_as(stripped / path.name)
    out = tmp_path / "seg.dcm"
    assert main(["segment", str(stripped), "-o", str(out), "--model", str(tiny_model), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "StudyInstanceUID, SeriesInstanceUID" in err[0] and ".seg.nrrd" in err[0]
    assert not out.exists()


def test_empty_label_map_is_refused(ct_series, tmp_path):
    from scdl.errors import ScdlError
    from scdl.io.image import read_ct
    from scdl.io.writers import write_label_map

    folder, files = ct_series
    empty = sitk.Image(read_ct(folder).GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(read_ct(folder))
    with pytest.raises(ScdlError, match="no organ was found"):
        write_label_map(empty, tmp_path / "empty.dcm", source_files=[str(f) for f in files])
    assert list(tmp_path.iterdir()) == []
