"""Overlay preview: slice choice, radiological orientation whatever the input direction, colours, atomic write."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from scdl.viz.overlay import _oriented_arrays, choose_slices, render_overlay


def test_choose_slices_goes_through_the_largest_foreground():
    lab = np.zeros((10, 12, 14), np.uint8)
    lab[3, 2:10, 2:10] = 1  # 64 voxels on axial slice 3
    lab[7, 5, 5] = 2
    lab[:, 8, 1:3] = 3  # coronal row 8: 8 (from label 1) + 20 voxels
    assert choose_slices(lab) == (3, 8)
    assert choose_slices(np.zeros((4, 6, 8), np.uint8)) == (2, 3)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 1, 0, 1, 0, 0, 0, 0, -1)])
def test_arrays_are_shown_in_lps_whatever_the_direction(direction):
    arr = np.zeros((6, 7, 8), np.int16)
    ct = sitk.GetImageFromArray(arr)
    ct.SetDirection(direction)
    ct.SetSpacing((1.0, 2.0, 3.0))
    # a marker voxel 10 mm toward the patient's LEFT (+x in LPS) of the image centre
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    left = ct.TransformPhysicalPointToIndex((centre[0] + 3.0, centre[1], centre[2]))
    lab = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    lab.CopyInformation(ct)
    lab[left] = 1
    ct_arr, lab_arr, spacing, _ = _oriented_arrays(ct, lab)
    z, y, x = np.argwhere(lab_arr == 1)[0]
    assert x > (lab_arr.shape[2] - 1) / 2  # patient's left = right half of an axial image (radiological view)


def test_render_patient_a(patient_a_ct, patient_a_seg, tmp_path):
    ct = sitk.ReadImage(str(patient_a_ct))
    seg = sitk.ReadImage(str(patient_a_seg))
    arr = sitk.GetArrayFromImage(seg)
    arr[(arr != 1) & (arr != 5)] = 0  # spleen and liver
    lab = sitk.GetImageFromArray(arr.astype(np.uint8))
    lab.CopyInformation(seg)
    out = render_overlay(ct, lab, tmp_path / "preview.png", {1: ("spleen", (0.0, 0.0, 1.0)),
                                                              5: ("liver", (1.0, 0.0, 0.0))}, title="patient A")
    assert out.exists() and not list(tmp_path.glob(".*partial*"))
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape[0] > 200 and png.shape[1] > 600
    colours = {tuple(int(v) for v in c) for c in np.unique(png.reshape(-1, 3), axis=0)}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours  # the legend patches, in the organs' colours


def test_mismatched_grids_write_nothing(patient_a_ct, tmp_path):
    ct = sitk.ReadImage(str(patient_a_ct))
    small = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    with pytest.raises(ValueError, match="not on the CT's grid"):
        render_overlay(ct, small, tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []


def test_preview_palette_separates_left_and_right_and_draws_the_reference(patient_a_ct, patient_a_seg, tmp_path):
    """Synapse gives both kidneys one colour; the preview does not. A missed organ (in the reference only)
    shows as a contour in its colour."""
    from scdl.labels.mapping import map_label_array
    from scdl.labels.table import LabelTable
    from scdl.viz.overlay import legend_from_table

    synapse = LabelTable.load("synapse")
    assert synapse.by_name("right kidney").color == synapse.by_name("left kidney").color
    legend = legend_from_table(synapse)
    colours = [rgb for _name, rgb in legend.values()]
    assert len(set(colours)) == len(colours) == 13
    assert legend_from_table(synapse, preview=False)[2][1] == legend_from_table(synapse, preview=False)[3][1]
    ct = sitk.ReadImage(str(patient_a_ct))
    mapped, _ = map_label_array(sitk.GetArrayFromImage(sitk.ReadImage(str(patient_a_seg))),
                                LabelTable.load("totalsegmentator_v2"), synapse)
    reference = sitk.GetImageFromArray(mapped.astype(np.uint8))
    reference.CopyInformation(ct)
    liver = synapse.by_name("liver").value
    pred = sitk.GetImageFromArray(np.where(mapped == liver, liver, 0).astype(np.uint8))   # everything else missed
    pred.CopyInformation(ct)
    out = render_overlay(ct, pred, tmp_path / "ref.png", synapse, reference=reference)
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    spleen = np.array([int(round(c * 255)) for c in legend[synapse.by_name("spleen").value][1]])
    image_part = png[:, : int(png.shape[1] * 0.8)]                  # left of the legend
    near = np.abs(image_part - spleen).sum(axis=2) < 40
    assert near.sum() > 30                                          # the missed spleen's contour is drawn
