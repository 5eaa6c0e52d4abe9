"""Reading CT and label maps: geometry kept exactly, label maps resampled onto the CT grid (real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.geometry import describe_grid, ijk_to_lps, ijk_to_ras, same_grid
from scdl.io.image import read_ct, read_image, read_label_map
from scdl.io.writers import write_image, write_label_map

# Patient A header values (example_ct.nii.gz, as stored in the file; float32-representable).
A_SIZE = (122, 101, 112)
A_ORIGIN = (177.95632934570312, -11.319000244140625, 94.3017578125)
A_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from Euler angles in degrees (x, then y, then z)."""
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture(scope="module")
def ct_a(patient_a_ct: Path) -> sitk.Image:
    return read_ct(patient_a_ct)


@pytest.fixture(scope="module")
def oblique(ct_a: sitk.Image) -> sitk.Image:
    """Patient A's voxels on a synthetic oblique grid with non-round spacing and origin."""
    img = sitk.Image(ct_a)
    img.SetDirection(tuple(_rotation(20, -10, 35).ravel()))
    img.SetOrigin((12.345678901, -98.7654321, 456.789012345))
    img.SetSpacing((0.7123456789, 0.81234567, 2.5123456))
    return img


def test_patient_a_header_and_values(ct_a: sitk.Image) -> None:
    assert ct_a.GetSize() == A_SIZE
    assert ct_a.GetSpacing() == (3.0, 3.0, 3.0)
    assert ct_a.GetOrigin() == A_ORIGIN
    assert ct_a.GetDirection() == A_DIRECTION
    arr = sitk.GetArrayViewFromImage(ct_a)
    assert (int(arr.min()), int(arr.max())) == (-1207, 3382)  # PROVENANCE.txt: int32 HU -1207..3382


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_nifti_round_trip_patient_a_exact(ct_a: sitk.Image, tmp_path: Path, ext: str) -> None:
    back = read_image(write_image(ct_a, tmp_path / f"a{ext}"))
    assert back.GetOrigin() == ct_a.GetOrigin()
    assert back.GetSpacing() == ct_a.GetSpacing()
    assert back.GetDirection() == ct_a.GetDirection()
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(ct_a))


def test_nifti_round_trip_oblique(oblique: sitk.Image, tmp_path: Path) -> None:
    """NIfTI stores geometry as float32: kept to float32 resolution, voxels bit-exact."""
    back = read_image(write_image(oblique, tmp_path / "oblique.nii.gz"))
    f32 = 2.0**-23
    np.testing.assert_allclose(back.GetOrigin(), oblique.GetOrigin(), rtol=0, atol=4 * f32 * 456.79)
    np.testing.assert_allclose(back.GetSpacing(), oblique.GetSpacing(), rtol=2 * f32, atol=0)
    np.testing.assert_allclose(back.GetDirection(), oblique.GetDirection(), rtol=0, atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(oblique))
    # the same voxel lands at the same physical point (to 1e-4 mm)
    index = (60, 50, 40)
    np.testing.assert_allclose(
        back.TransformIndexToPhysicalPoint(index), oblique.TransformIndexToPhysicalPoint(index), atol=1e-4
    )


@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_double_precision_round_trip_oblique(oblique: sitk.Image, tmp_path: Path, ext: str) -> None:
    back = read_image(write_image(oblique, tmp_path / f"oblique{ext}"))
    np.testing.assert_allclose(back.GetOrigin(), oblique.GetOrigin(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.GetSpacing(), oblique.GetSpacing(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.GetDirection(), oblique.GetDirection(), rtol=0, atol=1e-12)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(oblique))


def test_detached_header_writes_two_files_and_no_leftovers(oblique: sitk.Image, tmp_path: Path) -> None:
    write_image(oblique, tmp_path / "vol.nhdr")
    write_image(oblique, tmp_path / "vol.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.mhd", "vol.nhdr", "vol.raw.gz", "vol.zraw"]


def test_label_map_same_grid_is_returned_as_is(ct_a: sitk.Image, patient_a_seg: Path) -> None:
    lab = read_label_map(patient_a_seg, reference=ct_a)
    assert lab.GetPixelID() == sitk.sitkUInt8
    assert same_grid(lab, ct_a)
    values = np.unique(sitk.GetArrayViewFromImage(lab))
    assert values[0] == 0 and 5 in values and 15 not in values  # liver present, oesophagus absent (README)


def test_patient_b_label_map_resampled_onto_dicom(patient_b_ct: Path, patient_b_seg: Path) -> None:
    """README: the NIfTI has direction diag(1,-1,1), the DICOM identity; after nearest-neighbour resampling the
    mean HU is liver ~89, spleen ~80, aorta ~177 (and nonsense on the raw arrays). The CT is B's whole DICOM
    series as the demo sample stores it (same voxels and grid)."""
    ct = read_ct(patient_b_ct)
    assert ct.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ScdlError, match="another grid") as err:
        read_label_map(patient_b_seg, reference=ct)
    assert str(patient_b_seg) in str(err.value) and "resample" in str(err.value)
    lab = read_label_map(patient_b_seg, reference=ct, resample=True)
    assert same_grid(lab, ct)
    hu = sitk.GetArrayViewFromImage(ct).astype(np.float64)
    labels = sitk.GetArrayViewFromImage(lab)
    means = {name: hu[labels == value].mean() for name, value in (("liver", 5), ("spleen", 1), ("aorta", 52))}
    assert means["liver"] == pytest.approx(89, abs=1)
    assert means["spleen"] == pytest.approx(80, abs=1)
    assert means["aorta"] == pytest.approx(177, abs=1)
    raw = sitk.GetArrayViewFromImage(read_label_map(patient_b_seg))
    assert hu[raw == 5].mean() < 0  # the unresampled arrays do not line up (flipped y)


def test_label_map_outside_the_image_is_an_error(ct_a: sitk.Image, patient_a_seg: Path, tmp_path: Path) -> None:
    lab = read_label_map(patient_a_seg)
    lab.SetOrigin((5000.0, 5000.0, 5000.0))
    moved = write_label_map(lab, tmp_path / "far.nii.gz")
    with pytest.raises(ScdlError, match="does not overlap"):
        read_label_map(moved, reference=ct_a, resample=True)


def test_float_label_map_with_integers_is_accepted_fractions_are_not(ct_a: sitk.Image, tmp_path: Path) -> None:
    lab = sitk.Cast(sitk.Image(ct_a.GetSize(), sitk.sitkUInt8), sitk.sitkFloat32)
    lab.CopyInformation(ct_a)
    lab[10, 10, 10] = 3.0
    ok = read_label_map(write_image(lab, tmp_path / "ok.nrrd"))
    assert ok.GetPixelID() == sitk.sitkUInt8 and ok[10, 10, 10] == 3
    lab[11, 10, 10] = 0.5
    with pytest.raises(ScdlError, match="fractional"):
        read_label_map(write_image(lab, tmp_path / "prob.nrrd"))
    lab[11, 10, 10] = -1.0
    with pytest.raises(ScdlError, match="negative"):
        read_label_map(write_image(lab, tmp_path / "neg.nrrd"))


def test_geometry_helpers(ct_a: sitk.Image) -> None:
    m = ijk_to_lps(ct_a)
    index = (7, 11, 13)
    np.testing.assert_allclose((m @ [*index, 1])[:3], ct_a.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(ijk_to_ras(ct_a)[:3, 3], [-A_ORIGIN[0], -A_ORIGIN[1], A_ORIGIN[2]])
    line = describe_grid(ct_a)
    assert line.startswith("122x101x112 voxels, spacing 3x3x3 mm") and line.endswith("orientation RAS")
    shifted = sitk.Image(ct_a)
    shifted.SetOrigin((A_ORIGIN[0] + 0.01, A_ORIGIN[1], A_ORIGIN[2]))
    assert not same_grid(shifted, ct_a)
    shifted.SetOrigin((A_ORIGIN[0] + 1e-6, A_ORIGIN[1], A_ORIGIN[2]))
    assert same_grid(shifted, ct_a)
