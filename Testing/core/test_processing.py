"""Pre/post-processing: reorientation, resampling, window/scaling, padding, exact inverses, largest component."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from scdl.errors import ScdlError
from scdl.processing.grid import Grid
from scdl.processing.intensity import window_and_scale
from scdl.processing.orientation import reorient_grid, reorientation_for
from scdl.processing.pipeline import Preprocessor
from scdl.processing.postprocess import keep_largest_component, keep_largest_component_image

AMOS = {"mode": "fixed_size", "size": [160, 160, 80], "orientation": "LAS", "patch_size": [96, 96, 96],
        "window": [-125, 275], "scale": [0, 1], "padding": {"value": 0.0, "position": "center"}}


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = math.cos(ax), math.sin(ax), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped_y": np.diag([1.0, -1.0, 1.0]),  # patient B's label map, AMOS storage
    "permuted": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float),
    "oblique": _rotation(0.3, -0.45) @ np.diag([1.0, -1.0, 1.0]),
}


def _image(arr: np.ndarray, spacing, direction: np.ndarray, origin=(-30.0, 12.5, 100.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin(origin)
    img.SetDirection([float(v) for v in direction.reshape(-1)])
    return img


def _blocks(shape_dhw, block_dhw, seed=0, n_labels=6) -> np.ndarray:
    """Label array that is constant on blocks of ``block_dhw`` voxels aligned with voxel 0."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, n_labels, size=[s // b for s, b in zip(shape_dhw, block_dhw)]).astype(np.uint8)
    for axis, b in enumerate(block_dhw):
        coarse = np.repeat(coarse, b, axis=axis)
    return coarse


# -- reorientation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("code", ["LPS", "LAS", "RAS", "SPL"])
def test_reorientation_equals_dicomorient(name, code):
    arr = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    img = _image(arr, (0.8, 1.1, 2.5), DIRECTIONS[name])
    ref = sitk.DICOMOrient(img, code)
    reo = reorientation_for(Grid.from_image(img), code)
    grid = reorient_grid(Grid.from_image(img), reo)
    assert grid.close_to(Grid.from_image(ref), tol=1e-9)
    out = reo.apply_array(arr)
    np.testing.assert_array_equal(out, sitk.GetArrayFromImage(ref))
    np.testing.assert_array_equal(reo.invert_array(out), arr)


# -- intensity ---------------------------------------------------------------------------------------
def test_window_and_scale_by_hand():
    hu = np.array([-1000, -125, -25, 75, 275, 3000], dtype=np.float32)
    np.testing.assert_allclose(window_and_scale(hu.copy()), [0, 0, 0.25, 0.5, 1, 1], atol=1e-7)
    # (x + 125) / 400 for the paper's window
    np.testing.assert_allclose(window_and_scale(np.array([100.0], np.float32)), [225 / 400], rtol=1e-7)
    np.testing.assert_allclose(window_and_scale(hu.copy(), (-100, 100), (-1, 1)), [-1, -1, -0.25, 0.75, 1, 1], atol=1e-7)
    assert window_and_scale(np.array([1, 2], dtype=np.int16)).dtype == np.float32


# -- the authors' AMOS recipe on real CT ---------------------------------------------------------------
def test_fixed_size_matches_torch_trilinear_on_patient_a(patient_a_ct):
    ct = sitk.ReadImage(str(patient_a_ct))
    arr, ctx = Preprocessor(AMOS).forward(ct)
    assert arr.dtype == np.float32 and arr.shape == (96, 160, 160)  # D 80 padded to 96, centred
    assert ctx.padding == ((8, 8), (0, 0), (0, 0))
    # METHOD.md §7 literally: reorient to LAS, torch trilinear resize (align_corners=False), window, pad
    las = sitk.GetArrayFromImage(sitk.DICOMOrient(ct, "LAS")).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(las)[None, None], size=(80, 160, 160),
                                          mode="trilinear", align_corners=False)[0, 0].numpy()
    ref = np.clip(ref, -125, 275)
    ref = (ref + 125) / 400
    # torch computes source coordinates in float32, ITK in float64: differences stay below 0.04 HU
    np.testing.assert_allclose(arr[8:88], ref, atol=1e-4)
    assert np.all(arr[:8] == 0) and np.all(arr[88:] == 0)
    labels = np.zeros(arr.shape, np.uint8)
    back = Preprocessor(AMOS).inverse_labels(labels, ctx)
    assert Grid.from_image(back).close_to(Grid.from_image(ct), tol=1e-9)


def test_fixed_size_upsampling_matches_torch():
    rng = np.random.default_rng(1)
    arr = rng.uniform(-200, 300, size=(6, 9, 11)).astype(np.float32)
    img = _image(arr, (1.0, 2.0, 3.0), DIRECTIONS["identity"])
    cfg = dict(AMOS, size=[23, 20, 13], orientation="LPS", patch_size=[8, 8, 8], window=[-1000, 1000], scale=[-1000, 1000])
    out, _ = Preprocessor(cfg).forward(img)
    ref = torch.nn.functional.interpolate(torch.from_numpy(arr)[None, None], size=(13, 20, 23),
                                          mode="trilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-3)  # HU; float32 coordinate rounding in torch


# -- exact inverse of label maps -------------------------------------------------------------------------
def test_patient_b_label_map_round_trip_exact(patient_b_seg):
    seg = sitk.ReadImage(str(patient_b_seg))
    assert np.allclose(np.array(seg.GetDirection()).reshape(3, 3), np.diag([1, -1, 1]))
    pre = Preprocessor({"mode": "spacing", "spacing_mm": list(seg.GetSpacing()), "orientation": "LPS",
                        "patch_size": [32, 32, 32]})
    _, ctx = pre.forward(seg)
    assert not ctx.resampled and ctx.reorientation.flip == (False, True, False)
    lab = pre.forward_labels(seg, ctx)
    src = sitk.GetArrayFromImage(seg)
    assert ctx.padding == ((6, 6), (0, 0), (0, 0))  # 20 slices padded to the 32-voxel patch
    np.testing.assert_array_equal(lab[6:26], src[:, ::-1, :])  # LAS -> LPS is a flip of y only
    assert not lab[:6].any() and not lab[26:].any()
    back = pre.inverse_labels(lab, ctx)
    assert Grid.from_image(back).close_to(Grid.from_image(seg), tol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), src)


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("mode", ["spacing", "fixed_size"])
def test_label_round_trip_with_resampling_is_exact_for_aligned_blocks(name, mode):
    # input grid (x, y, z) = (24, 18, 15) voxels of (1, 1.5, 2) mm; model voxels 2x2x1 input voxels -> 1:1 for z
    shape_dhw, block_dhw = (15, 18, 24), (1, 2, 2)
    src = _blocks(shape_dhw, block_dhw)
    img = _image(src, (1.0, 1.5, 2.0), DIRECTIONS[name])
    grid = Grid.from_image(img)
    reo = reorientation_for(grid, "LPS")
    oriented = reorient_grid(grid, reo)
    # model spacing / size given in the model (LPS) axes: twice the input voxel along the input's x and y
    factor = np.ones(3)
    for k in range(3):
        if reo.perm[k] in (0, 1):
            factor[k] = 2.0
    if mode == "spacing":
        cfg = {"mode": "spacing", "spacing_mm": list(np.asarray(oriented.spacing) * factor)}
    else:
        cfg = {"mode": "fixed_size", "size": [int(v) for v in np.asarray(oriented.size) / factor]}
    pre = Preprocessor({**cfg, "orientation": "LPS", "patch_size": [16, 16, 16]})
    ct = sitk.Cast(img, sitk.sitkInt16)
    arr, ctx = pre.forward(ct)
    assert ctx.resampled and arr.shape == ctx.shape
    lab = pre.forward_labels(img, ctx)
    back = pre.inverse_labels(lab, ctx)
    assert Grid.from_image(back).close_to(grid, tol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), src)
    # every model voxel holds exactly one block: the label histogram scales by the block volume
    np.testing.assert_array_equal(np.bincount(lab.ravel(), minlength=6)[1:] * 4, np.bincount(src.ravel(), minlength=6)[1:])


# -- physical positions -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["flipped_y", "oblique", "permuted"])
@pytest.mark.parametrize("cfg", [{"mode": "spacing", "spacing_mm": [2.5, 3.0, 1.75], "orientation": "LPS"},
                                 {"mode": "fixed_size", "size": [10, 12, 9], "orientation": "LAS"}])
def test_positions_preserved_with_a_linear_ramp(name, cfg):
    """A CT whose value is a linear function of the physical point: every model voxel must hold f(its centre)."""
    coef, const = np.array([0.7, -1.3, 2.1]), 5.0
    shape = (14, 17, 19)
    img = _image(np.zeros(shape, np.float32), (1.2, 1.0, 1.6), DIRECTIONS[name])
    grid = Grid.from_image(img)
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    idx = np.stack([ii, jj, kk], -1).reshape(-1, 3) * np.asarray(grid.spacing)
    phys = idx @ grid.matrix.T + np.asarray(grid.origin)
    ramp = (phys @ coef + const).reshape(shape).astype(np.float32)
    img = _image(ramp, grid.spacing, DIRECTIONS[name])
    pre = Preprocessor({**cfg, "patch_size": [16, 16, 16], "window": [-1e4, 1e4], "scale": [-1e4, 1e4]})
    arr, ctx = pre.forward(img)
    pg = ctx.padded_grid
    exact = np.zeros(arr.shape, bool)  # model voxels whose centre lies inside the input (no border clamping)
    for k, j, i in np.ndindex(*arr.shape):
        cont = grid.physical_to_index(pg.index_to_physical([i, j, k]))
        if np.all(cont >= 0) and np.all(cont <= np.asarray(grid.size) - 1):
            assert arr[k, j, i] == pytest.approx(pg.index_to_physical([i, j, k]) @ coef + const, abs=2e-3)
            exact[k, j, i] = True
    assert exact.sum() > 100
    # float maps come back linearly onto the input grid: the ramp again wherever all 8 model neighbours are exact
    back = sitk.GetArrayFromImage(pre.inverse_scalar(arr, ctx))
    cont = np.stack([pg.physical_to_index(p) for p in phys])  # (N, 3) x, y, z in the padded model grid
    base = np.floor(cont).astype(int)
    ok = np.all((base >= 0) & (base + 1 <= np.asarray(pg.size) - 1), axis=1)
    for corner in np.ndindex(2, 2, 2):
        c = np.clip(base + np.asarray(corner), 0, np.asarray(pg.size) - 1)
        ok &= exact[c[:, 2], c[:, 1], c[:, 0]]
    ok = ok.reshape(shape)
    assert ok.sum() > 100
    np.testing.assert_allclose(back[ok], ramp[ok], atol=2e-3)


def test_single_labelled_voxel_lands_on_the_same_physical_point():
    src = np.zeros((9, 11, 13), np.uint8)
    src[4, 7, 2] = 3
    img = _image(src, (2.0, 2.0, 2.0), DIRECTIONS["oblique"])
    pre = Preprocessor({"mode": "spacing", "spacing_mm": [2.0, 2.0, 2.0], "orientation": "RAS", "patch_size": [16, 16, 16]})
    _, ctx = pre.forward(img)
    lab = pre.forward_labels(img, ctx)
    (k, j, i), = np.argwhere(lab == 3)
    np.testing.assert_allclose(ctx.padded_grid.index_to_physical([i, j, k]),
                               Grid.from_image(img).index_to_physical([2, 7, 4]), atol=1e-9)


# -- padding / bad input -----------------------------------------------------------------------------------
def test_small_volume_is_padded_centred_and_cropped_back():
    src = np.full((5, 30, 7), 275, np.int16)
    img = _image(src, (1, 1, 1), np.eye(3))
    pre = Preprocessor({"mode": "spacing", "spacing_mm": [1, 1, 1], "orientation": "LPS", "patch_size": [16, 16, 16],
                        "padding": {"value": -1.0, "position": "center"}})
    arr, ctx = pre.forward(img)
    assert arr.shape == (16, 30, 16) and ctx.padding == ((5, 6), (0, 0), (4, 5))
    assert np.all(arr[5:10, :, 4:11] == 1.0) and arr.sum() == pytest.approx(5 * 30 * 7 - (16 * 30 * 16 - 5 * 30 * 7))
    back = pre.inverse_labels(np.ones(arr.shape, np.int64), ctx)
    assert back.GetSize() == (7, 30, 5) and sitk.GetArrayViewFromImage(back).min() == 1


def test_label_map_on_another_grid_is_refused():
    img = _image(np.zeros((8, 8, 8), np.int16), (1, 1, 1), np.eye(3))
    other = _image(np.zeros((8, 8, 8), np.uint8), (1, 1, 1), DIRECTIONS["flipped_y"])
    pre = Preprocessor({"mode": "spacing", "spacing_mm": [1, 1, 1], "patch_size": [8, 8, 8]})
    _, ctx = pre.forward(img)
    with pytest.raises(ScdlError, match="not on the grid of its CT"):
        pre.forward_labels(other, ctx)


def test_invalid_preprocessing_section_is_a_clear_error():
    with pytest.raises(ScdlError, match="orientation"):
        Preprocessor({"mode": "spacing", "spacing_mm": [1, 1, 1], "orientation": "LPX"})
    with pytest.raises(ScdlError, match="size"):
        Preprocessor({"mode": "fixed_size", "size": [10, 10]})


# -- largest component -------------------------------------------------------------------------------------
def test_keep_largest_component_per_organ():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 1          # 27 voxels: kept
    lab[7, 7, 7] = 1                # isolated: removed
    lab[5:7, 0:2, 0:2] = 2          # 8 voxels: kept
    lab[0, 9, 9] = 2                # removed
    lab[8, 1, 1] = 3                # single component: kept
    lab[4, 4, 4] = 1                # touches the cube only diagonally
    out = keep_largest_component(lab)
    assert out.dtype == np.uint8
    assert (out == 1).sum() == 28 and out[7, 7, 7] == 0 and out[4, 4, 4] == 1
    assert (out == 2).sum() == 8 and out[0, 9, 9] == 0 and out[8, 1, 1] == 3
    face = keep_largest_component(lab, fully_connected=False)
    assert (face == 1).sum() == 27 and face[4, 4, 4] == 0
    only2 = keep_largest_component(lab, values=[2])
    assert only2[7, 7, 7] == 1 and only2[0, 9, 9] == 0
    img = _image(lab, (1, 2, 3), DIRECTIONS["oblique"])
    out_img = keep_largest_component_image(img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out_img), out)
    assert out_img.GetSpacing() == img.GetSpacing()
