"""``scdl demo``: outputs, the Dice table (checked against a Dice computed here), training-data status, errors.

The demo runs against a temporary copy of Resources/ (``SCDL_RESOURCES``) whose default model
``scdl-abdominal-ct`` is a small random-weight package (width 2, 12 mm grid: 8 windows on the sample)
carrying the default model's provenance fields; it segments the real bundled sample CT (patient B). Random weights make the Dice values
meaningless as accuracy but not as arithmetic: every printed number is recomputed from the written files.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.cli.demo import NIFTI, OVERLAY, SCORES, SEGMENTATION, load_sample_info, training_status
from scdl.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATIENT_A = "totalsegmentator-fixtures/patient-A"
PATIENT_B = "totalsegmentator-fixtures/patient-B"


def _resources_copy(repo_root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("Labels", "Sample"):
        shutil.copytree(repo_root / "Resources" / name, dest / name)
    shutil.copy(repo_root / "Resources" / "Catalog.json", dest / "Catalog.json")
    (dest / "Models").mkdir()
    return dest


def _install_default(resources: Path, training: list[str], held_out: list[str]) -> Path:
    """A tiny random package installed as ``scdl-abdominal-ct`` with the given provenance patient lists."""
    from model_factory import make_tiny_package

    from scdl.models.package import ModelPackage, save_package

    pkg = ModelPackage.load(make_tiny_package(resources.parent / "tiny", spacing=(12.0, 12.0, 12.0)))
    card = json.loads(json.dumps(pkg.card))
    card["id"] = "scdl-abdominal-ct"
    card["provenance"]["training_patients"] = training
    card["provenance"]["held_out_patients"] = held_out
    return save_package(resources / "Models" / "scdl-abdominal-ct", card, pkg.state_dicts(), pkg.labels)


@pytest.fixture()
def demo_resources(repo_root, tmp_path, monkeypatch) -> Path:
    resources = _resources_copy(repo_root, tmp_path / "Resources")
    _install_default(resources, [PATIENT_A], [PATIENT_B])
    monkeypatch.setenv("SCDL_RESOURCES", str(resources))
    return resources


def _dice(pred: np.ndarray, gt: np.ndarray, value: int) -> float:
    p, g = pred == value, gt == value
    return 2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum())


def test_demo_writes_outputs_and_dice_table(demo_resources, tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--device", "cpu", "--progress", "none"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([SEGMENTATION, NIFTI, OVERLAY, SCORES])

    sample = load_sample_info(demo_resources / "Sample")
    ct = sitk.ReadImage(str(sample["ct_path"]))
    nifti = sitk.ReadImage(str(out / NIFTI))
    assert nifti.GetSize() == ct.GetSize() == (512, 512, 20)
    assert np.allclose(nifti.GetSpacing(), ct.GetSpacing()) and np.allclose(nifti.GetOrigin(), ct.GetOrigin())
    from scdl.io.image import read_label_map

    seg = read_label_map(out / SEGMENTATION)   # the Slicer segmentation holds the same labels
    pred = sitk.GetArrayFromImage(nifti)
    assert np.array_equal(sitk.GetArrayFromImage(seg), pred)
    png = (out / OVERLAY).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # every Dice in dice.csv (and the printed table) recomputed from the written NIfTI and the sample labels
    gt = sitk.GetArrayFromImage(sitk.ReadImage(str(sample["labels_path"])))
    with (out / SCORES).open(newline="") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    labelled = [int(v) for v in np.unique(gt) if v]
    assert len(labelled) == 8                               # spleen, liver, stomach, aorta, IVC, veins, pancreas, R adrenal
    from scdl.labels.table import LabelTable

    table = LabelTable.load("synapse")
    for value in labelled:
        name = table.by_value(value).name
        assert float(rows[name]["dice"]) == pytest.approx(_dice(pred, gt, value), abs=1e-6)
        assert int(rows[name]["gt_voxels"]) == int((gt == value).sum())
        assert name in printed
    mean_labelled = np.mean([_dice(pred, gt, v) for v in labelled])
    assert f"mean over these organs     {mean_labelled:.3f}   (8 organs)" in printed
    assert printed.count("mean over") == 1                  # one mean, not two
    assert "not in the reference labels (not scored):" in printed and " ok" not in printed
    assert "held-out test patient" in printed and PATIENT_B in printed
    assert "time taken:" in printed


def test_demo_scores_a_known_prediction(demo_resources, tmp_path, monkeypatch, capsys):
    """The scoring path with Dice values known by construction: the prediction is the sample's own label map
    with the liver kept only in slices 10..19 and the spleen relabelled as stomach."""
    import scdl.inference.predictor as predictor

    sample = load_sample_info(demo_resources / "Sample")
    truth = sitk.ReadImage(str(sample["labels_path"]))
    gt = sitk.GetArrayFromImage(truth)
    pred = gt.copy()
    pred[:10][pred[:10] == 6] = 0          # liver (6) removed from the first 10 slices
    pred[pred == 1] = 7                    # spleen (1) predicted as stomach (7)
    image = sitk.GetImageFromArray(pred)
    image.CopyInformation(truth)

    def fake_segment(ct, package, **kwargs):
        return predictor.SegmentationResult(labels=image, table=package.labels, timings={"infer": 0.0})

    monkeypatch.setattr(predictor, "segment_image", fake_segment)
    out = tmp_path / "known"
    assert main(["demo", "--out", str(out), "--progress", "none"]) == 0
    with (out / SCORES).open(newline="") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    liver_all, liver_kept = int((gt == 6).sum()), int((gt[10:] == 6).sum())
    spleen, stomach = int((gt == 1).sum()), int((gt == 7).sum())
    assert (liver_all, spleen, stomach) == (366708, 130634, 74102)       # sample.json's counts
    assert float(rows["liver"]["dice"]) == pytest.approx(2 * liver_kept / (liver_kept + liver_all), abs=1e-6)
    assert float(rows["stomach"]["dice"]) == pytest.approx(2 * stomach / (2 * stomach + spleen), abs=1e-6)
    assert rows["spleen"]["status"] == "missed" and float(rows["spleen"]["dice"]) == 0.0
    for organ in ("aorta", "pancreas", "right adrenal gland"):
        assert float(rows[organ]["dice"]) == 1.0 and float(rows[organ]["hd95_mm"]) == 0.0
    printed = capsys.readouterr().out
    expected_mean = np.mean([2 * liver_kept / (liver_kept + liver_all), 2 * stomach / (2 * stomach + spleen), 0.0,
                             1.0, 1.0, 1.0, 1.0, 1.0])
    assert f"mean over these organs     {expected_mean:.3f}   (8 organs)" in printed
    assert "spleen" in printed and "missed" in printed


def test_demo_json_progress(demo_resources, tmp_path, capsys):
    out = tmp_path / "json_out"
    assert main(["demo", "--out", str(out), "--device", "cpu", "--progress", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines]           # stdout holds JSON lines only
    phases = {e["phase"] for e in events if "phase" in e}
    assert {"read", "preprocess", "infer", "postprocess", "score", "write", "done"} <= phases
    sample = next(e for e in events if e.get("event") == "sample")
    assert sample["in_training_data"] == "held-out" and sample["patient"] == PATIENT_B
    dice = next(e for e in events if e.get("event") == "dice")
    done = events[-1]
    assert done["phase"] == "done" and done["seconds"] > 0
    assert done["mean_dice"] == pytest.approx(dice["mean"]["dice"])
    assert set(done["outputs"]) == {"segmentation", "nifti", "overlay", "scores"}
    assert all(Path(p).is_file() for p in done["outputs"].values())


def test_demo_without_default_model_fails_clearly(repo_root, tmp_path, monkeypatch, capsys):
    resources = _resources_copy(repo_root, tmp_path / "Resources")
    monkeypatch.setenv("SCDL_RESOURCES", str(resources))
    out = tmp_path / "never"
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "scdl-abdominal-ct" in err[0] and "python bench/train_default_model.py" in err[0]
    assert not out.exists()


def test_demo_refuses_damaged_sample(demo_resources, tmp_path, capsys):
    ct = demo_resources / "Sample" / "sample_ct.nii.gz"
    data = bytearray(ct.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ct.write_bytes(bytes(data))
    assert main(["demo", "--out", str(tmp_path / "x"), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "make_sample.py" in err
    assert not (tmp_path / "x").exists()


def test_training_status_reads_the_card():
    card = {"provenance": {"training_patients": [PATIENT_A], "held_out_patients": [PATIENT_B]}}
    assert training_status(card, PATIENT_B)[0] == "held-out"
    assert training_status(card, PATIENT_A)[0] == "training"
    assert "training-set Dice" in training_status(card, PATIENT_A)[1]
    assert training_status({"provenance": {}}, PATIENT_B)[0] == "unknown"
    assert training_status({"provenance": {"training_patients": [PATIENT_A]}}, "someone-else")[0] == "held-out"


# -- the bundled sample ------------------------------------------------------------------------------
def test_sample_is_patient_b_and_keeps_provenance(repo_root, real_data, patient_b_dicom, patient_b_seg, monkeypatch):
    import importlib.util

    from scdl.io.image import read_ct

    folder = repo_root / "Resources" / "Sample"
    spec = importlib.util.spec_from_file_location("make_sample", folder / "make_sample.py")
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    # the CT: patient B's DICOM slices in Testing/data (the 5 lowest of 20) are the sample's slices z = 0..4,
    # voxel for voxel and on the same grid
    sample_ct = sitk.ReadImage(str(folder / "sample_ct.nii.gz"))
    dicom = read_ct(patient_b_dicom)
    assert dicom.GetSize() == (512, 512, 5) and sample_ct.GetSize() == (512, 512, 20)
    assert np.array_equal(sitk.GetArrayViewFromImage(dicom), sitk.GetArrayViewFromImage(sample_ct)[:5])
    assert dicom.GetOrigin() == sample_ct.GetOrigin() and dicom.GetDirection() == sample_ct.GetDirection()
    np.testing.assert_allclose(dicom.GetSpacing(), sample_ct.GetSpacing(), atol=1e-6)
    # the labels: make_sample's own build from B's label map, onto the sample CT's grid (the whole B series is
    # not in the repository; its voxels and grid are the sample CT's), equals the bundled labels; the file
    # checksums equal sample.json's
    monkeypatch.setattr(make_sample, "SOURCE_CT", str(folder / "sample_ct.nii.gz"))
    assert make_sample.check(real_data, folder) == []
    info = load_sample_info(folder)
    assert info["patient"] == PATIENT_B and info["label_table"] == "synapse"
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size < 5_000_000
    provenance = (folder / "PROVENANCE.txt").read_text(encoding="utf-8")
    for needed in ("CC BY 4.0", "Apache-2.0", "0e65a448d557382b1e925276212b3bec7f5aff83", "not manual",
                   "What was changed"):
        assert needed in provenance
    # the organ voxel counts of the source label map survive the resampling (a pure permutation)
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(patient_b_seg)))
    assert info["organs_labelled"]["liver"] == int((src == 5).sum())
    assert info["organs_labelled"]["spleen"] == int((src == 1).sum())
