"""NIfTI files that ITK refuses, read with nibabel.

ITK's NIfTI reader refuses an affine whose direction cosines are not orthonormal to within ITK's tolerance
("ITK only supports orthonormal direction cosines"). Real files are like that: 25 of the 117 masks of two
TotalSegmentator dataset subjects deviate by about 1e-4 (float rounding in the tool that wrote them), and
nibabel reads them. We use nibabel (the field's NIfTI library) rather than patching the header ourselves.

The affine is split into spacing (column norms) and direction; the direction is replaced by the nearest
orthonormal matrix (polar decomposition via SVD). Where that moves any axis by more than
:data:`MAX_DEVIATION` (the file is sheared, not rounded), one clear error is raised instead.
RAS (NIfTI) is converted to ITK's LPS.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError

#: Largest deviation of the direction cosines from orthonormal that is treated as rounding.
MAX_DEVIATION = 1e-2


def nearest_orthonormal(direction: np.ndarray) -> tuple[np.ndarray, float]:
    """(orthonormal 3x3 matrix nearest to ``direction`` in the Frobenius norm, largest element change)."""
    u, _s, vt = np.linalg.svd(direction)
    ortho = u @ vt
    return ortho, float(np.abs(ortho - direction).max())


def read_nifti_nibabel(path: "os.PathLike[str] | str") -> sitk.Image:
    """Read a 3D NIfTI with nibabel into a SimpleITK image (LPS, orthonormalised direction).

    Raises:
        ScdlError: nibabel is missing, the file is not 3D, or its axes are sheared beyond rounding.
    """
    try:
        import nibabel as nib
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ScdlError("has a non-orthonormal affine that ITK refuses, and nibabel is not installed.", path,
                        "pip install nibabel") from None
    try:
        nii = nib.load(os.fspath(path))
        data = np.asanyarray(nii.dataobj)
    except Exception as err:  # noqa: BLE001 - any reader failure is a problem of this file
        raise ScdlError(f"cannot be read as NIfTI ({err}).", path, "re-export or copy the file again.") from None
    data = np.squeeze(data)
    if data.ndim != 3:
        raise ScdlError(f"holds a {data.ndim}D array, not a 3D volume.", path, "give a 3D volume.")
    affine = np.asarray(nii.affine, dtype=np.float64)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :4]          # RAS -> LPS
    matrix, origin = lps[:, :3], lps[:, 3]
    spacing = np.linalg.norm(matrix, axis=0)
    if np.any(spacing <= 0):
        raise ScdlError("has a zero voxel size in its affine.", path, "fix the header (pixdim / srow).")
    direction, deviation = nearest_orthonormal(matrix / spacing)
    if deviation > MAX_DEVIATION:
        raise ScdlError(f"has sheared axes (direction cosines {deviation:.3g} from orthonormal), which neither "
                        "ITK nor SCDL can represent.", path, "resample the file onto an orthogonal grid.")
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))   # (x, y, z) -> (z, y, x)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction.reshape(-1)])
    return img


def is_orthonormal_refusal(err: BaseException) -> bool:
    """Whether an ITK reader error is its refusal of non-orthonormal direction cosines."""
    return "orthonormal" in str(err).lower()
