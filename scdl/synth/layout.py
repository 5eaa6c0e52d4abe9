"""Anatomy layout: a label map prepared for synthesis.

A layout is two arrays on one grid (D, H, W) = (z, y, x):

- ``structures`` int16: the label map's values, with ``-1`` for air outside the body (and outside the field
  of view) and ``0`` for unlabeled voxels inside the body (fat, muscle wall, mesentery: split at synthesis);
- ``depth`` uint8: millimetres (rounded, capped at 255) from each voxel to the border of its region: for a
  structure voxel the nearest voxel of another value, for an unlabeled body voxel the body surface.

The body outline of a label-only map is estimated: every voxel within ``body_margin_mm`` of a labeled
structure, holes filled slice by slice (a CT's own outline, ``HU > -500``, is used when an image is given).
Depth lets the synthesis derive, with per-subject thicknesses, the renal cortex (outer 3-7 mm of a kidney),
the cortical shell of bones, the subcutaneous fat and the abdominal muscle wall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

OUTSIDE = -1
#: Estimated body outline: labeled structures dilated by this much (subcutaneous fat + muscle wall).
BODY_MARGIN_MM = 25.0


@dataclass
class Layout:
    """structures int16 (D, H, W), depth uint8 (D, H, W) in mm; spacing (z, y, x) mm."""

    structures: np.ndarray
    depth: np.ndarray
    spacing_zyx: tuple[float, float, float]


def body_from_labels(labels: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float = BODY_MARGIN_MM) -> np.ndarray:
    """bool (D, H, W): voxels within ``margin_mm`` of a labeled voxel, holes filled per axial slice."""
    from scipy.ndimage import binary_fill_holes, distance_transform_edt

    labeled = labels > 0
    if not labeled.any():
        return np.zeros(labels.shape, dtype=bool)
    body = distance_transform_edt(~labeled, sampling=spacing_zyx) <= margin_mm
    for k in range(body.shape[0]):
        body[k] = binary_fill_holes(body[k])
    return body


def body_from_image(hu: np.ndarray) -> np.ndarray:
    """bool (D, H, W): the CT's body (HU > -500), holes filled per axial slice (lungs and gas stay inside)."""
    from scipy.ndimage import binary_fill_holes

    body = hu > -500
    for k in range(body.shape[0]):
        body[k] = binary_fill_holes(body[k])
    return body


def region_depth(structures: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """uint8 mm from each voxel to the nearest voxel of another value (its region's border)."""
    from scipy.ndimage import distance_transform_edt

    border = np.zeros(structures.shape, dtype=bool)
    for axis in range(3):
        a = np.swapaxes(structures, 0, axis)
        b = np.swapaxes(border, 0, axis)
        diff = a[1:] != a[:-1]
        b[1:] |= diff
        b[:-1] |= diff
    depth = distance_transform_edt(~border, sampling=spacing_zyx)
    return np.clip(np.rint(depth), 0, 255).astype(np.uint8)


def make_layout(labels: np.ndarray, spacing_zyx: Sequence[float], body: Optional[np.ndarray] = None,
                body_margin_mm: float = BODY_MARGIN_MM) -> Layout:
    """Layout of a label map (int (D, H, W), any table's values) on its grid.

    Args:
        spacing_zyx: voxel size (z, y, x) in mm.
        body: bool (D, H, W) body mask, or None to estimate it from the labels.
    """
    spacing = tuple(float(s) for s in spacing_zyx)
    if body is None:
        body = body_from_labels(labels, spacing, body_margin_mm)
    body = body | (labels > 0)
    structures = labels.astype(np.int16)
    structures[~body] = OUTSIDE
    depth = region_depth(structures, spacing)
    unlabeled = structures == 0
    if unlabeled.any():      # unlabeled body voxels: depth below the skin (fat and muscle wall follow it)
        from scipy.ndimage import distance_transform_edt

        skin = distance_transform_edt(body, sampling=spacing)
        depth[unlabeled] = np.clip(np.rint(skin[unlabeled]), 0, 255).astype(np.uint8)
    return Layout(structures, depth, spacing)
