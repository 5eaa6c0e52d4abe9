"""Reading CT volumes and label maps (NIfTI, NRRD, MetaImage, DICOM) as validated 3D SimpleITK images.

    >>> img = read_ct("case.nii.gz", warn=print)                 # HU, geometry as in the file
    >>> img = read_ct("dicom_folder/")                           # largest CT series of the folder
    >>> lab = read_label_map("seg.nii.gz", reference=img, resample=True)   # nearest neighbour onto img's grid

:func:`read_image` (any format, :mod:`scdl.io.reader`) is the one reader below both; a TotalSegmentator mask
folder reads as one label map (:mod:`scdl.io.mask_folder`).
Every problem the user can fix raises one :class:`~scdl.errors.ScdlError` naming the file and the fix.
Origin, spacing and direction (oblique included) are kept exactly as SimpleITK reads them (LPS).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.geometry import describe_grid, same_grid
from scdl.io.mask_folder import is_mask_folder, read_mask_folder
from scdl.io.reader import Warn, read_image
from scdl.io.validation import check_ct_values
from scdl.labels.protocol import LabelTableLike

__all__ = ["MAX_LABEL_VALUE", "Warn", "read_ct", "read_image", "read_label_map"]

#: Largest label value of a label map (TotalSegmentator's 117 classes are the most any bundled table has).
MAX_LABEL_VALUE = 65535


def read_ct(path: "os.PathLike[str] | str", *, series_uid: Optional[str] = None, warn: Warn = None) -> sitk.Image:
    """:func:`read_image` plus CT checks: a blank (constant) volume is an error; values that do not look like
    Hounsfield units are reported through ``warn`` and reading continues."""
    img = read_image(path, series_uid=series_uid, warn=warn)
    check_ct_values(img, path, warn)
    return img


def _as_label_type(img: sitk.Image, path: Path) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(img)
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        if not np.all(arr == np.round(arr)):
            raise ScdlError(
                "has fractional voxel values, so it is not a label map (it looks like an image or probability map).",
                path,
                "give an integer label map (one integer per structure, 0 = background).",
            )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        raise ScdlError(
            f"has negative voxel values (down to {lo:g}), so it is not a label map.",
            path,
            "give a label map with values 0 (background), 1, 2, ...",
        )
    if hi > MAX_LABEL_VALUE:        # per-class tables (scores, present values) are as long as the largest value
        raise ScdlError(f"has label values up to {hi:.0f}; label maps number their structures 1 to "
                        f"{MAX_LABEL_VALUE} (a larger value is a damaged or foreign file, and tables of that many "
                        "classes would not fit in memory).", path, "renumber the labels, or give the right file.")
    for pixel_id, top in ((sitk.sitkUInt8, 255), (sitk.sitkUInt16, 65535)):
        if hi <= top:
            return img if img.GetPixelID() == pixel_id else sitk.Cast(img, pixel_id)
    raise ScdlError(f"has label values up to {hi:g}, too large for a label map.", path, "renumber the labels.")


def read_label_map(
    path: "os.PathLike[str] | str", reference: Optional[sitk.Image] = None, resample: bool = False,
    table: "LabelTableLike | str | None" = None,
) -> sitk.Image:
    """Read an integer label map (0 = background), optionally brought onto a reference image's grid.

    Args:
        path: label map file (any :func:`read_image` format; a single-layer ``.seg.nrrd`` reads as its label map;
            NIfTI that ITK refuses for non-orthonormal axes is read with nibabel), or a TotalSegmentator output
            folder of ``<structure>.nii.gz`` masks (:mod:`scdl.io.mask_folder`).
        table: for a mask folder, the LabelTable (or bundled name) that numbers its structures
            (default TotalSegmentator v2).
        reference: image whose grid the labels must share (e.g. the CT).
        resample: if the grids differ, resample the labels onto ``reference`` with nearest-neighbour
            interpolation (physical positions are kept; voxels outside the label map become 0).
            Without it, a different grid is an error.

    Returns:
        The label map as the smallest unsigned integer type that holds its values (uint8 / uint16; values above
        :data:`MAX_LABEL_VALUE` are refused).
    """
    path = Path(path)
    if is_mask_folder(path):          # a TotalSegmentator output folder: one <structure>.nii.gz per class
        img = _as_label_type(read_mask_folder(path, table), path)
    else:
        img = _as_label_type(read_image(path), path)
    if reference is None or same_grid(img, reference):
        return img
    if not resample:
        raise ScdlError(
            f"is on another grid than the image: labels {describe_grid(img)}; image {describe_grid(reference)}.",
            path,
            "resample the label map onto the image (--resample in the CLI, resample=True in Python), "
            "or give the label map that belongs to this image.",
        )
    had_labels = bool(sitk.GetArrayViewFromImage(img).any())
    out = sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, img.GetPixelID())
    if had_labels and not sitk.GetArrayViewFromImage(out).any():
        raise ScdlError(
            f"does not overlap the image in space (labels {describe_grid(img)}; image {describe_grid(reference)}).",
            path,
            "check that the label map belongs to this image (same patient and scan).",
        )
    return out
