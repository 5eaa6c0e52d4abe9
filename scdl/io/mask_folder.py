"""A TotalSegmentator output folder (one binary ``<structure>.nii.gz`` per class) read as one label map.

    >>> lab = read_mask_folder("s0006_masks/")               # uint8 map in TotalSegmentator v2 `total` ids

Each file's stem is looked up by name (:func:`scdl.labels.names.normalize_name`) in the label table
(TotalSegmentator v2 unless another is given); the masks are merged in file-name order and where masks
overlap the first file wins: measured, this reproduces ``s0006_seg.nii.gz`` voxel for voxel from
``s0006_masks/`` (its PROVENANCE says "the lower id wins"; the file itself says file-name order). Empty masks (absent
structures) are allowed. All masks must share one grid; masks that ITK refuses for non-orthonormal direction
cosines are read with nibabel (:mod:`scdl.io.nifti_nibabel`) and compared with a 1e-3 mm tolerance.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.reader import read_image
from scdl.labels.names import normalize_name
from scdl.labels.protocol import LabelTableLike
from scdl.labels.table import LabelTable

MASK_SUFFIXES = (".nii.gz", ".nii")
DEFAULT_TABLE = "totalsegmentator_v2"


def mask_files(folder: Path) -> list[Path]:
    """The NIfTI files directly in ``folder`` (sorted by name)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(MASK_SUFFIXES)
                  and not p.name.startswith("."))


def is_mask_folder(path: "os.PathLike[str] | str") -> bool:
    """A folder holding NIfTI masks (and no DICOM files): the TotalSegmentator output layout."""
    path = Path(path)
    return path.is_dir() and bool(mask_files(path))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_mask_folder(folder: "os.PathLike[str] | str", table: "LabelTableLike | str | None" = None) -> sitk.Image:
    """Merge the binary masks of ``folder`` into one label map numbered by ``table`` (a LabelTable or name)."""
    folder = Path(folder)
    table = table if isinstance(table, LabelTableLike) else LabelTable.load(table or DEFAULT_TABLE)
    by_name = {normalize_name(e.name): int(e.value) for e in table.entries if int(e.value) != 0}
    files = mask_files(folder)
    if not files:
        raise ScdlError("holds no NIfTI mask.", folder, "give a folder of <structure>.nii.gz files "
                        "(TotalSegmentator's output) or a label map file.")
    unknown = [_stem(f) for f in files if normalize_name(_stem(f)) not in by_name]
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise ScdlError(f"has masks whose names are not in the label table {getattr(table, 'name', '')}: {shown}.",
                        folder, "give the table that names these structures (--labels / the manifest's 'labels').")
    entries = [(by_name[normalize_name(_stem(f))], f) for f in files]      # file-name order
    reference: Optional[sitk.Image] = None
    merged: Optional[np.ndarray] = None
    for value, path in entries:
        img = read_image(path)
        arr = sitk.GetArrayViewFromImage(img)
        if reference is None:
            reference = img
            merged = np.zeros(arr.shape, dtype=np.uint8 if table.num_classes <= 256 else np.uint16)
        elif arr.shape != merged.shape or not _close_grid(img, reference):
            raise ScdlError("is on another grid than the folder's other masks.", path,
                            "give masks of one scan, all on the same grid.")
        merged[(arr != 0) & (merged == 0)] = value
    out = sitk.GetImageFromArray(merged)
    out.CopyInformation(reference)
    return out


def _close_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    return (np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol) and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))
