"""SCDLSegment's folder batch with DICOM SEG output: DICOM series get ``<name>.dcm`` (``scdl segment -o x.dcm``),
other inputs keep ``.seg.nrrd``; without the option every output is ``.seg.nrrd`` as before."""

import os

import pytest
import SimpleITK as sitk

from SCDLSegmentLib import logic as segment_logic
from SCDLSegmentLib.logic import batchOutputExtension


class _RecordingJob:
    """Stands in for ``jobs.SegmentJob``: records the command's input and output, finishes at once."""

    made = []

    def __init__(self, source, output, model, device, backend="auto"):
        from SCDLSlicerLib.childoutput import ProgressTracker

        self.source, self.output = source, output
        self.tracker = ProgressTracker()
        self.cancelled, self.finished, self.succeeded = False, True, True
        _RecordingJob.made.append(self)

    def start(self):
        return self

    def poll(self):
        return []

    def cancel(self):
        self.cancelled = True

    def error_message(self):
        return None


@pytest.fixture()
def mixed_folder(tmp_path):
    """A NIfTI CT and a folder holding one DICOM file (found by its content)."""
    folder = tmp_path / "in"
    (folder / "series").mkdir(parents=True)
    image = sitk.Image(8, 8, 4, sitk.sitkInt16)
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    with open(folder / "series" / "IM0001", "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM" + b"\0" * 16)
    return folder


@pytest.mark.parametrize("dicom_seg, expected", [(True, {"ct": "ct.seg.nrrd", "series": "series.dcm"}),
                                                 (False, {"ct": "ct.seg.nrrd", "series": "series.seg.nrrd"})])
def test_folder_batch_writes_dicom_seg_for_dicom_series_only(slicer_app, mixed_folder, tmp_path, monkeypatch,
                                                             dicom_seg, expected):
    monkeypatch.setattr(segment_logic.jobs, "SegmentJob", _RecordingJob)
    _RecordingJob.made = []
    batch = segment_logic.SCDLSegmentLogic().startBatch(str(tmp_path / "out"), "some-model", "cpu",
                                                        str(mixed_folder), dicomSeg=dicom_seg)
    batch.wait(timeout=10)
    outputs = {os.path.basename(os.path.normpath(item.source)).split(".")[0]: item.output.name for item in batch.items}
    assert outputs == expected
    assert sorted((os.path.basename(os.path.normpath(j.source)), j.output.name) for j in _RecordingJob.made) == \
        [("ct.nii.gz", expected["ct"]), ("series", expected["series"])]


def test_batch_output_extension(tmp_path):
    (tmp_path / "dicom").mkdir()
    assert batchOutputExtension(str(tmp_path / "dicom"), dicomSeg=True) == ".dcm"
    assert batchOutputExtension(str(tmp_path / "dicom"), dicomSeg=False) == ".seg.nrrd"
    assert batchOutputExtension(str(tmp_path / "ct.nii.gz"), dicomSeg=True) == ".seg.nrrd"
