"""DICOM folders: files with and without .dcm, several series, the dcmqi 3-slice CT, series choice (real data).

Patient B's DICOM in Testing/data is the 5 lowest of its 20 slices (unchanged files; the whole CT is the demo
sample, ``patient_b_ct``): 512 x 512 x 5, 2 mm apart, the series' own origin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.dicom import list_series, select_series
from scdl.io.image import read_ct, read_image

DCMQI_UID = "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
DCMQI_SEG_UID = "1.2.276.0.7230010.3.1.3.0.42154.1458337731.665795"


@pytest.fixture(scope="module")
def ct_b(patient_b_dicom: Path) -> sitk.Image:
    return read_ct(patient_b_dicom)


def _copy(src_files, dst: Path, suffix: str = "") -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src_files:
        target = dst / (Path(f).name + suffix)
        shutil.copyfile(f, target)
    return dst


def test_patient_b_folder_without_extensions(ct_b: sitk.Image, patient_b_dicom: Path) -> None:
    assert not any(p.suffix == ".dcm" for p in patient_b_dicom.iterdir())
    assert ct_b.GetSize() == (512, 512, 5)
    np.testing.assert_allclose(ct_b.GetSpacing(), (0.9765625, 0.9765625, 2.0))
    # first slice position (0020,0032) of the lowest slice; 5 slices 2 mm apart up to -796.5
    np.testing.assert_allclose(ct_b.GetOrigin(), (-249.51171875, -437.51171875, -804.5))
    arr = sitk.GetArrayViewFromImage(ct_b)
    assert int(arr.min()) == -1024  # rescale intercept -1024 applied: HU


def test_patient_b_with_dcm_extension_and_single_file(ct_b: sitk.Image, patient_b_dicom: Path, tmp_path: Path) -> None:
    folder = _copy(sorted(patient_b_dicom.iterdir()), tmp_path / "with_ext", suffix=".dcm")
    img = read_ct(folder)
    assert img.GetSize() == ct_b.GetSize() and img.GetOrigin() == ct_b.GetOrigin()
    assert np.array_equal(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ct_b))
    # one file (with or without .dcm) reads its whole series from the folder
    for single in (sorted(folder.iterdir())[2], sorted(patient_b_dicom.iterdir())[2]):
        one = read_image(single)
        assert one.GetSize() == (512, 512, 5) and one.GetOrigin() == ct_b.GetOrigin()


def test_dcmqi_three_slice_series(dcmqi_dir: Path) -> None:
    """The folder also holds liver.dcm (a DICOM SEG): the CT series is chosen, and the choice is reported."""
    notes: list[str] = []
    img = read_ct(dcmqi_dir, warn=notes.append)
    assert img.GetSize() == (512, 512, 3)
    np.testing.assert_allclose(img.GetSpacing(), (0.810547, 0.810547, 1.0), atol=1e-9)
    np.testing.assert_allclose(img.GetOrigin(), (-235.199997, -226.800003, -128.690002), atol=1e-9)
    assert len(notes) == 1 and DCMQI_UID in notes[0] and "SEG" in notes[0]
    # the label maps shipped with it are on the same grid: liver mask mean HU is soft tissue
    liver = sitk.GetArrayViewFromImage(sitk.ReadImage(str(dcmqi_dir / "liver_seg.nrrd")))
    hu = sitk.GetArrayViewFromImage(img)
    assert 0 < hu[liver > 0].mean() < 100
    series = {s.uid: s for s in list_series(dcmqi_dir)}
    assert series[DCMQI_UID].modality == "CT" and series[DCMQI_SEG_UID].modality == "SEG"
    assert series[DCMQI_UID].frames == 3 and series[DCMQI_SEG_UID].frames == 3


def test_two_series_largest_wins_and_is_reported(
    ct_b: sitk.Image, patient_b_dicom: Path, dcmqi_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(sorted(patient_b_dicom.iterdir()), tmp_path / "mixed")
    _copy(sorted(dcmqi_dir.glob("ct-3slice_*.dcm")), folder)
    notes: list[str] = []
    img = read_ct(folder, warn=notes.append)
    assert img.GetSize() == (512, 512, 5)
    assert np.array_equal(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ct_b))
    assert len(notes) == 1
    assert "2 DICOM series" in notes[0] and "5 slices" in notes[0] and DCMQI_UID in notes[0]
    # the user can pick the other one
    small = read_ct(folder, series_uid=DCMQI_UID)
    assert small.GetSize() == (512, 512, 3)
    assert select_series(folder).uid == ""  # patient B is anonymised: no Series Instance UID
    with pytest.raises(ScdlError, match="no DICOM series with UID") as err:
        read_ct(folder, series_uid="1.2.3.4")
    assert str(folder) in str(err.value) and DCMQI_UID in str(err.value)


def test_dicom_seg_file_alone_is_not_an_image(dcmqi_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ScdlError, match="is a DICOM SEG object .*, not an image"):
        read_ct(dcmqi_dir / "liver.dcm")
    with pytest.raises(ScdlError, match="holds a DICOM SEG object .*, not an image"):
        read_ct(dcmqi_dir, series_uid=DCMQI_SEG_UID)
    folder = _copy([dcmqi_dir / "liver.dcm"], tmp_path / "seg_only")
    with pytest.raises(ScdlError, match="no image series") as err:
        read_ct(folder)
    assert str(folder) in str(err.value)


def test_missing_slice_is_an_error(patient_b_dicom: Path, tmp_path: Path) -> None:
    """A deleted middle slice leaves a 4 mm gap: a regular grid would misplace slices, so reading stops."""
    files = sorted(patient_b_dicom.iterdir())
    folder = _copy(files[:2] + files[3:], tmp_path / "gap")
    with pytest.raises(ScdlError, match="not evenly spaced") as err:
        read_ct(folder)
    assert "from 2 to 4 mm" in str(err.value) and str(folder) in str(err.value)
