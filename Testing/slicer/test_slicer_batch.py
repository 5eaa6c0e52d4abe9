"""Batch segmentation: finding CTs in a folder, and every volume of the scene to files."""

import numpy as np
import pytest
import slicer
import slicerio

from harness import ijk_to_ras
from SCDLSegment import SCDLSegmentLogic, findCtInputs
from SCDLSlicerLib.jobs import BatchItem, BatchJob


def test_find_ct_inputs_in_the_real_data(ts_dir, dcmqi_dir):
    found = findCtInputs(str(ts_dir))
    names = [p[len(str(ts_dir)) + 1:] if p != str(ts_dir) else "." for p in found]
    # label maps (example_seg*.nii.gz) and the class map (.json) are skipped; the DICOM series (files named
    # CT.1.3.12...) is one input
    assert names == ["example_ct.nii.gz", "example_ct_dicom"]
    dcmqi = findCtInputs(str(dcmqi_dir))
    assert dcmqi == [str(dcmqi_dir)]  # *_seg.nrrd skipped, the folder holds DICOM
    assert findCtInputs("") == [] and findCtInputs(str(ts_dir / "nowhere")) == []


def test_scene_batch_writes_each_volume_and_survives_a_removed_one(slicer_app, coarse_model, tmp_path):
    import SCDLSegment

    ct = SCDLSegment.SCDLSegmentTest._syntheticCt("CT one")
    gone = SCDLSegment.SCDLSegmentTest._syntheticCt("CT two")
    logic = SCDLSegmentLogic()
    batch = logic.startBatchFromScene(tmp_path / "out", model=str(coarse_model), device="cpu")
    assert [item.label for item in batch.items] == ["CT one", "CT two"]
    assert [item.output.name for item in batch.items] == ["CT_one.seg.nrrd", "CT_two.seg.nrrd"]
    slicer.mrmlScene.RemoveNode(gone)  # removed while the first one runs
    batch.wait(timeout=240)
    assert [item.status for item in batch.items] == ["done", "failed"]
    assert batch.items[1].message == "the volume was removed from the scene"
    assert batch.percent == 100.0 and batch.summary() == "1 segmented, 1 failed, 0 cancelled (of 2)"
    seg = slicerio.read_segmentation(str(batch.items[0].output))
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ seg["ijkToLPS"], ijk_to_ras(ct), atol=1e-4)
    assert seg["voxels"].shape == (48, 48, 40)
    assert not list((tmp_path / "out").glob(".*partial*")) and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CT_one.seg.nrrd"]
    assert batch.items[0].input_file is not None and not batch.items[0].input_file.parent.exists()  # temp inputs gone


class _FakeJob:
    """A job that finishes after ``polls`` polls (batch bookkeeping without child processes)."""

    def __init__(self, polls, ok=True):
        from SCDLSlicerLib.childoutput import ProgressTracker

        self.left, self.ok, self.cancelled = polls, ok, False
        self.tracker = ProgressTracker()

    def start(self):
        return self

    def poll(self):
        self.left -= 1
        return []

    @property
    def finished(self):
        return self.left <= 0 or self.cancelled

    @property
    def succeeded(self):
        return self.finished and self.ok and not self.cancelled

    def cancel(self):
        self.cancelled = True

    def warnings(self):
        return []

    def error_message(self):
        return None if self.ok else "broken input"


def test_batch_progress_and_cancel_bookkeeping(tmp_path):
    items = [BatchItem(f"ct{i}", f"/in/{i}.nii.gz", tmp_path / f"{i}.seg.nrrd") for i in range(4)]
    jobs = iter([_FakeJob(2), _FakeJob(1, ok=False), _FakeJob(100), _FakeJob(1)])
    cleaned = []
    batch = BatchJob(items, lambda item: next(jobs), cleanup=cleaned.append).start()
    assert batch.percent == 0.0
    batch.poll()
    batch.poll()  # first done
    assert [i.status for i in items] == ["done", "running", "pending", "pending"]
    assert batch.percent == pytest.approx(25.0)
    batch.poll()  # second failed
    assert items[1].status == "failed" and items[1].message == "broken input"
    batch.poll()
    batch.cancel()  # third is running: cancelled, fourth never starts
    batch.poll()
    assert [i.status for i in items] == ["done", "failed", "cancelled", "cancelled"]
    assert batch.finished and cleaned == items[:3]
    assert batch.summary() == "1 segmented, 1 failed, 2 cancelled (of 4)"
