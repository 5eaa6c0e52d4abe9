"""Dice / HD95 / ASD: hand-made shapes with known values, agreement with MONAI, empty classes, and the
``scdl evaluate`` command on real label maps (grids, --resample, matching by name, CSV/JSON)."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from scdl.cli.main import main
from scdl.metrics.scores import class_scores, summary


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def _brute_force(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of a to the surface of b, and back, by exhaustive search."""
    pa = np.argwhere(_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_surface(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(1), d.min(0)


def test_two_cubes_offset_by_k_voxels():
    n, k = 10, 2
    spacing = (2.0, 1.5, 0.5)  # (z, y, x) mm; the offset is along x
    pred = np.zeros((20, 20, 24), np.uint8)
    gt = np.zeros_like(pred)
    pred[5:15, 5:15, 5:15] = 1
    gt[5:15, 5:15, 5 + k:15 + k] = 1
    (s,) = class_scores(pred, gt, spacing, {1: "cube"})
    assert s.status == "found" and s.pred_voxels == s.gt_voxels == n ** 3
    assert s.dice == pytest.approx((n - k) / n, abs=1e-6)  # overlap 10*10*8 of 1000 + 1000
    d_ab, d_ba = _brute_force(pred == 1, gt == 1, spacing)
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(k * 0.5)  # the plain Hausdorff distance: k * x-spacing
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    asd = np.concatenate([d_ab, d_ba]).mean()
    assert s.hd95 == pytest.approx(hd95, abs=1e-4)
    assert s.asd == pytest.approx(asd, abs=1e-4)
    (full,) = class_scores(pred, gt, spacing, {1: "cube"}, percentile=100)
    assert full.hd95 == pytest.approx(k * 0.5, abs=1e-6)


def test_parallel_plates_have_every_distance_equal():
    k, spacing = 3, (1.0, 0.8, 2.5)
    pred = np.zeros((12, 12, 12), np.uint8)
    gt = np.zeros_like(pred)
    pred[2:10, 2:10, 4] = 1  # one voxel thick: every voxel is a surface voxel
    gt[2:10, 2:10, 4 + k] = 1
    (s,) = class_scores(pred, gt, spacing, {1: "plate"})
    assert s.dice == 0.0 and s.status == "misplaced"
    assert s.hd95 == pytest.approx(k * 2.5, abs=1e-5)
    assert s.asd == pytest.approx(k * 2.5, abs=1e-5)


def test_identical_maps_score_perfectly():
    arr = np.zeros((10, 11, 12), np.uint8)
    arr[2:6, 3:9, 1:12] = 4  # touches the x border
    (s,) = class_scores(arr, arr.copy(), (1.0, 1.0, 1.0), {4: "x"})
    assert (s.dice, s.hd95, s.asd) == (1.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def blobs_and_monai():
    """Random blobs (one class touching the image border) and MONAI's full-volume one-hot scores of them."""
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(0)
    shape = (24, 32, 30)

    def blobs():
        out = np.zeros(shape, np.uint8)
        for value in (1, 2, 3):
            out[ndimage.gaussian_filter(rng.random(shape), 2.5) > 0.53] = value
        return out

    pred, gt = blobs(), blobs()
    pred[:2, :, :4] = 2  # a class touching the image border
    spacing = (2.5, 0.8, 1.1)
    p = one_hot(torch.from_numpy(pred)[None, None].long(), 4)
    g = one_hot(torch.from_numpy(gt)[None, None].long(), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = compute_dice(p, g, include_background=False)[0]
        hd95 = compute_hausdorff_distance(p, g, percentile=95, spacing=list(spacing))[0]
        asd = compute_average_surface_distance(p, g, symmetric=True, spacing=list(spacing))[0]
    return pred, gt, spacing, list(zip(dice.tolist(), hd95.tolist(), asd.tolist()))


@pytest.mark.parametrize("backend", ["scdl", "monai"])
def test_agrees_with_monai_on_the_full_volume(backend, blobs_and_monai):
    pred, gt, spacing, reference = blobs_and_monai
    ours = class_scores(pred, gt, spacing, {1: "a", 2: "b", 3: "c"}, backend=backend)
    for s, (d, h, a) in zip(ours, reference):
        assert s.status == ("found" if d > 0 else "misplaced") and h > 0.0
        assert abs(s.dice - d) <= 1e-4
        assert abs(s.hd95 - h) <= 1e-4
        assert abs(s.asd - a) <= 1e-4


def test_empty_classes():
    pred = np.zeros((8, 8, 8), np.uint8)
    gt = np.zeros_like(pred)
    pred[1:4, 1:4, 1:4] = 1
    gt[1:4, 1:4, 1:4] = 1
    gt[5:7, 5:7, 5:7] = 2  # missed by the prediction
    pred[5:7, 0:2, 0:2] = 3  # predicted, absent from the ground truth
    scores = {s.value: s for s in class_scores(pred, gt, (1, 1, 1), {1: "a", 2: "b", 3: "c", 4: "d"})}
    assert scores[1].status == "found" and scores[1].dice == 1.0
    assert scores[2].status == "missed" and scores[2].dice == 0.0 and math.isinf(scores[2].hd95)
    assert scores[3].status == "false_positive" and scores[3].dice == 0.0 and math.isinf(scores[3].asd)
    assert scores[4].status == "absent" and math.isnan(scores[4].dice) and math.isnan(scores[4].hd95)
    m = summary(list(scores.values()))
    assert m["dice"] == pytest.approx(1 / 2)  # the headline: (1 + 0) / 2 over the classes the ground truth has
    assert m["classes_in_reference"] == 2
    assert m["dice_all_classes"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3 with the false positive; absent left out
    assert m["hd95"] == 0.0 and m["asd"] == 0.0 and m["classes_scored"] == 3


# -- the command, on real label maps ---------------------------------------------------------------
def _write(arr: np.ndarray, like: sitk.Image, path) -> str:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(like)
    sitk.WriteImage(img, str(path))
    return str(path)


def test_cli_scores_a_shifted_organ_on_patient_a(patient_a_seg, tmp_path, capsys):
    gt_img = sitk.ReadImage(str(patient_a_seg))
    gt = sitk.GetArrayFromImage(gt_img)
    liver = (gt == 5).astype(np.uint8) * 5
    shifted = np.zeros_like(liver)
    shifted[:, :, 1:] = liver[:, :, :-1]  # one voxel (3 mm) along x
    pred_path = _write(shifted, gt_img, tmp_path / "pred.nii.gz")
    gt_path = _write(liver, gt_img, tmp_path / "liver.nii.gz")
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    assert main(["evaluate", pred_path, gt_path, "--csv", str(out_csv), "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "label 5" in table and "mean" in table
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["value"] == "5" and rows[-1]["name"] == "mean"
    report = json.loads(out_json.read_text(encoding="utf-8"))
    (liver_row,) = report["classes"]
    expected = class_scores(shifted, liver, gt_img.GetSpacing()[::-1], {5: "label 5"})[0]
    assert liver_row["dice"] == pytest.approx(expected.dice, abs=1e-6)
    assert 0.9 < liver_row["dice"] < 1.0
    assert liver_row["hd95_mm"] == pytest.approx(3.0, abs=1e-4)  # every shifted surface voxel: 0 or 3 mm away


def test_cli_grid_mismatch_needs_resample(patient_b_ct, patient_b_seg, tmp_path, capsys):
    from scdl.io.image import read_image

    # the prediction lives on (a 160x160 block of) the DICOM grid (B's series as the demo sample stores it); the
    # NIfTI ground truth has direction diag(1, -1, 1): another grid, although its voxel centres are the same points
    dicom = sitk.RegionOfInterest(read_image(patient_b_ct), [160, 160, 20], [200, 180, 0])
    seg = sitk.ReadImage(str(patient_b_seg))
    on_dicom = sitk.Resample(seg, dicom, sitk.Transform(), sitk.sitkNearestNeighbor, 0, seg.GetPixelID())
    pred_path = tmp_path / "pred_on_dicom.nrrd"
    sitk.WriteImage(on_dicom, str(pred_path))
    assert main(["evaluate", str(pred_path), str(patient_b_seg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(patient_b_seg) in err[0] and "--resample" in err[0]
    out_json = tmp_path / "b.json"
    assert main(["evaluate", str(pred_path), str(patient_b_seg), "--resample", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    scored = [c for c in report["classes"] if c["status"] != "absent"]
    assert len(scored) >= 3
    for c in scored:  # the same voxels after an exact axis flip
        assert c["dice"] == 1.0 and c["hd95_mm"] == 0.0 and c["asd_mm"] == 0.0


def test_cli_matches_labels_by_name(patient_a_seg, tmp_path):
    from scdl.labels.mapping import map_label_array
    from scdl.labels.table import LabelTable

    ts, synapse = LabelTable.load("totalsegmentator_v2"), LabelTable.load("synapse")
    gt_img = sitk.ReadImage(str(patient_a_seg))
    pred, _ = map_label_array(sitk.GetArrayFromImage(gt_img), ts, synapse)  # Synapse numbering
    pred_path = _write(np.asarray(pred, np.uint8), gt_img, tmp_path / "synapse_pred.nii.gz")
    out_json = tmp_path / "m.json"
    assert main(["evaluate", pred_path, str(patient_a_seg), "--labels", "synapse",
                 "--gt-labels", "totalsegmentator_v2", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    by_status = {}
    for c in report["classes"]:
        by_status.setdefault(c["status"], []).append(c)
    assert len(by_status["found"]) == 12  # every Synapse organ but the oesophagus (README)
    assert all(c["dice"] == 1.0 for c in by_status["found"])
    assert [c["name"] for c in by_status["absent"]] and len(by_status["absent"]) == 1
    assert report["mean"]["dice"] == 1.0
