"""Write a CT image as a DICOM series for tests, with SimpleITK's GDCM writer (no pydicom or highdicom, so the
tests of SCDL's DICOM SEG writer do not check highdicom against itself).

Every file carries what a scanner's would and a DICOM SEG must reference: CT Image Storage, Study, Series,
SOP Instance and Frame of Reference UIDs, Image Position / Orientation (Patient), Instance Number.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

#: A UID root for test objects (the "example" root of the DICOM standard's UID guidelines is not registered;
#: 2.25 is the UUID-derived root that needs no registration).
ROOT = "2.25.3141592653589793238462643383279"


def write_ct_series(image: sitk.Image, folder: Path, series: int = 1) -> list[Path]:
    """Write ``image`` (3D, HU) as one single-frame CT file per slice into ``folder``; returns the files in slice
    order (file k holds slice z = k, at ``image``'s position of index (0, 0, k))."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    study_uid, series_uid = f"{ROOT}.1", f"{ROOT}.{series + 1}"
    tags = {
        "0008|0016": "1.2.840.10008.5.1.4.1.1.2",          # CT Image Storage
        "0008|0060": "CT",
        "0008|0020": "20240101", "0008|0030": "120000",
        "0010|0010": "Test^Patient", "0010|0020": "SCDL-TEST-1",
        "0020|000d": study_uid, "0020|000e": series_uid, "0020|0052": f"{series_uid}.0",
        "0020|0010": "1", "0020|0011": str(series), "0008|103e": "test CT",
        "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{image.GetSpacing()[2]:g}",
        "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",
    }
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        plane.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        plane.SetMetaData("0020|0013", str(k + 1))
        plane.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        path = folder / f"IM{k + 1:04d}"
        writer.SetFileName(str(path))
        writer.Execute(plane)
        files.append(path)
    return files
