"""Image grid (geometry) helpers: comparison, one-line descriptions, voxel -> physical (LPS) matrices.

SimpleITK images live in LPS physical space: the physical point of voxel index (i, j, k) is
``origin + direction @ diag(spacing) @ (i, j, k)``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True if ``a`` and ``b`` have the same voxel grid (size, spacing, origin, direction).

    Args:
        a, b: images.
        tol: spacing is compared relatively (``|x - y| <= tol * |y|``), direction cosines absolutely
            (``<= tol``), the origin absolutely in mm (``<= tol`` plus two float32 steps of its value, so that a
            grid read back from NIfTI, which stores float32, still matches).
    """
    if a.GetDimension() != b.GetDimension() or tuple(a.GetSize()) != tuple(b.GetSize()):
        return False
    sa, sb = np.asarray(a.GetSpacing(), float), np.asarray(b.GetSpacing(), float)
    if np.any(np.abs(sa - sb) > tol * np.abs(sb)):
        return False
    oa, ob = np.asarray(a.GetOrigin(), float), np.asarray(b.GetOrigin(), float)
    if np.any(np.abs(oa - ob) > tol + 2.0**-22 * np.abs(ob)):
        return False
    return bool(np.all(np.abs(np.asarray(a.GetDirection()) - np.asarray(b.GetDirection())) <= tol))


def orientation_code(img: sitk.Image) -> str:
    """Three-letter ITK orientation code of a 3D image, e.g. "LPS" (x to Left, y to Posterior, z to Superior)."""
    if img.GetDimension() != 3:
        return "?"
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())


def is_oblique(img: sitk.Image, tol: float = 1e-4) -> bool:
    """True if the axes are not aligned with the patient axes (direction is not a signed permutation)."""
    d = np.abs(np.asarray(img.GetDirection(), float))
    return bool(np.any((d > tol) & (d < 1 - tol)))


def describe_grid(img: sitk.Image) -> str:
    """One line for messages, e.g. ``512x512x20 voxels, spacing 0.977x0.977x2 mm, origin (-249.5, -437.5, -804.5),
    orientation LPS``."""
    size = "x".join(str(s) for s in img.GetSize())
    spacing = "x".join(f"{s:.4g}" for s in img.GetSpacing())
    origin = ", ".join(f"{o:.4g}" for o in img.GetOrigin())
    text = f"{size} voxels, spacing {spacing} mm, origin ({origin})"
    if img.GetDimension() == 3:
        text += f", orientation {orientation_code(img)}"
        if is_oblique(img):
            direction = ", ".join(f"{d:.4g}" for d in img.GetDirection())
            text += f" (oblique, direction {direction})"
    return text


def ijk_to_lps(img: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k, 1) to physical LPS coordinates (x, y, z, 1) in mm."""
    dim = img.GetDimension()
    m = np.eye(dim + 1)
    direction = np.asarray(img.GetDirection(), float).reshape(dim, dim)
    m[:dim, :dim] = direction @ np.diag(img.GetSpacing())
    m[:dim, dim] = img.GetOrigin()
    return m


def ijk_to_ras(img: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index to RAS coordinates (what Slicer shows): LPS with x and y negated."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps(img)
