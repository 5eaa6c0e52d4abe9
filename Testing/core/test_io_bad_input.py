"""Bad input: each case ends in one ScdlError that names the file and a fix (or, for non-HU values, a warning)."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.image import read_ct, read_image
from scdl.io.writers import write_image


@pytest.fixture(scope="module")
def ct_a(patient_a_ct: Path) -> sitk.Image:
    return read_image(patient_a_ct)


def _expect(path: Path, pattern: str, **kwargs) -> ScdlError:
    with pytest.raises(ScdlError, match=pattern) as err:
        read_ct(path, **kwargs)
    text = str(err.value)
    assert str(path) in text, text          # names the file
    assert "Fix:" in text and err.value.fix  # and says what to do
    assert "\n" not in text                 # one line
    return err.value


def test_nonexistent_path(tmp_path: Path) -> None:
    _expect(tmp_path / "missing.nii.gz", "does not exist")


@pytest.mark.parametrize("name", ["scan.jpg", "scan.png", "notes.txt", "volume"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    err = _expect(path, "unsupported file type")
    assert ".nii.gz" in err.fix and "DICOM" in err.fix


def test_truncated_nifti_gz(patient_a_ct: Path, tmp_path: Path) -> None:
    """ITK alone would read this file 'successfully', with the missing half of the voxels set to 0."""
    data = patient_a_ct.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    _expect(path, "truncated or damaged")


def test_truncated_nifti_uncompressed(ct_a: sitk.Image, tmp_path: Path) -> None:
    full = write_image(ct_a, tmp_path / "full.nii").read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(full[:-1000])
    err = _expect(path, "truncated")
    assert "5520256" in str(err)  # 122*101*112 voxels * 4 bytes (int32) declared by the header


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_truncated_nrrd_and_mha(ct_a: sitk.Image, tmp_path: Path, ext: str) -> None:
    full = write_image(ct_a, tmp_path / f"full{ext}").read_bytes()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(full[: len(full) // 2])
    _expect(path, "cannot be read")


@pytest.mark.parametrize("name", ["random.nii.gz", "random.nii", "random.nrrd", "random.mha", "random.dcm"])
def test_unreadable_garbage(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect(path, "cannot be read|not a valid NIfTI|damaged")


def test_truncated_dicom_file(dcmqi_dir: Path, tmp_path: Path) -> None:
    data = (dcmqi_dir / "ct-3slice_02.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    _expect(path, "cannot be read as DICOM")


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])
def test_2d_image(ct_a: sitk.Image, tmp_path: Path, ext: str) -> None:
    path = write_image(ct_a[:, :, 50], tmp_path / f"slice{ext}")
    _expect(path, "is a 2D image \\(122x101 voxels\\)")
    single = write_image(ct_a[:, :, 50:51], tmp_path / f"one{ext}")
    _expect(single, "is a 2D image \\(122x101x1 voxels\\)")


def test_4d_image(ct_a: sitk.Image, tmp_path: Path) -> None:
    path = tmp_path / "two_phases.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([ct_a, ct_a]), str(path))
    _expect(path, "is a 4D image \\(122x101x112x2 voxels")


def test_vector_image(ct_a: sitk.Image, tmp_path: Path) -> None:
    path = write_image(sitk.Compose([ct_a, ct_a, ct_a]), tmp_path / "rgb.nrrd")
    _expect(path, "has 3 values per voxel")


def test_empty_volume(tmp_path: Path) -> None:
    small = write_image(sitk.Image(6, 5, 4, sitk.sitkInt16), tmp_path / "small.nii")
    header = bytearray(small.read_bytes()[:352])
    header[46:48] = struct.pack("<h", 0)  # dim[3] = 0
    path = tmp_path / "zero.nii"
    path.write_bytes(bytes(header))
    _expect(path, "is empty: its header declares 6x5x0 voxels")


def test_blank_volume(tmp_path: Path) -> None:
    img = sitk.Image(40, 40, 30, sitk.sitkInt16) - 1024
    _expect(write_image(img, tmp_path / "blank.nii.gz"), "every voxel has the value -1024")


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_nan_and_inf_voxels(ct_a: sitk.Image, tmp_path: Path, ext: str) -> None:
    """For NIfTI this needs SCDL's own check: ITK's NIfTI reader silently turns NaN/inf into 0."""
    arr = sitk.GetArrayFromImage(ct_a).astype(np.float32)
    arr[3, 4, 5] = np.nan
    arr[0, 0, 0] = np.inf
    arr[1, 0, 0] = -np.inf
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ct_a)
    path = tmp_path / f"nan{ext}"
    sitk.WriteImage(img, str(path))
    _expect(path, "contains 3 voxel\\(s\\) that are NaN or infinite")


def test_float_ct_without_nan_is_fine(ct_a: sitk.Image, tmp_path: Path) -> None:
    path = write_image(sitk.Cast(ct_a, sitk.sitkFloat32), tmp_path / "float.nii.gz")
    img = read_ct(path)
    assert float(sitk.GetArrayViewFromImage(img).min()) == -1207.0


def test_folder_without_dicom(tmp_path: Path) -> None:
    folder = tmp_path / "no_dicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image")
    (folder / "DICOMDIR.bak").write_bytes(os.urandom(300))
    _expect(folder, "contains no readable DICOM files")


def test_values_not_in_hu_warn_and_continue(ct_a: sitk.Image, tmp_path: Path) -> None:
    arr = sitk.GetArrayFromImage(ct_a).astype(np.float32)
    cases = {
        "normalised.nii.gz": (arr + 1024) / 4000.0,                      # [0, 1] after normalisation
        "eight_bit.nrrd": np.clip((arr + 1024) / 16, 0, 255).astype(np.uint8),  # 8-bit export
        "no_rescale.mha": np.clip(arr + 1024, 0, None).astype(np.uint16),  # stored values without intercept
    }
    for name, values in cases.items():
        img = sitk.GetImageFromArray(values)
        img.CopyInformation(ct_a)
        path = write_image(img, tmp_path / name)
        notes: list[str] = []
        out = read_ct(path, warn=notes.append)
        assert out.GetSize() == ct_a.GetSize()
        assert len(notes) == 1 and str(path) in notes[0] and "Hounsfield" in notes[0], (name, notes)
    # HU x 10 keeps the air but puts 0.5 % of voxels above 4000 (patient A's 99.5th percentile is 431 HU)
    img = sitk.GetImageFromArray((arr * 10).astype(np.int32))
    img.CopyInformation(ct_a)
    notes = []
    read_ct(write_image(img, tmp_path / "tenth_hu.nii.gz"), warn=notes.append)
    assert len(notes) == 1 and "0.5 % of the voxels are above 4310" in notes[0]


def test_real_ct_gives_no_warning(patient_a_ct: Path, patient_b_ct: Path, patient_b_dicom: Path) -> None:
    for path in (patient_a_ct, patient_b_ct, patient_b_dicom):
        notes: list[str] = []
        read_ct(path, warn=notes.append)
        assert notes == []


def test_readonly_copy_of_real_data_is_unchanged(patient_a_ct: Path, tmp_path: Path) -> None:
    """Reading never writes next to the input (e.g. no temporary or index files)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(patient_a_ct, folder / patient_a_ct.name)
    read_ct(folder / patient_a_ct.name)
    assert [p.name for p in folder.iterdir()] == [patient_a_ct.name]
