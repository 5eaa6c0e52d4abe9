"""Reorientation to an ITK orientation code ("LPS", "LAS", ...) as an exact axis permutation + flips.

ITK codes name, for image axes x, y, z, the patient direction each axis increases toward: an identity
direction is "LPS"; AMOS files are "LAS" (direction diag(1, -1, 1)). Reorientation never interpolates:
it is the permutation and flipping that ``SimpleITK.DICOMOrient`` applies, computed here on the grid alone
so that a large volume is not copied just to learn its new geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scdl.processing.grid import Grid

_AXIS_OF_LETTER = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
_POSITIVE = {"L", "P", "S"}


def validate_orientation(code: str) -> str:
    """Return ``code`` upper-cased if it is a valid 3-letter ITK orientation code, else raise ``ValueError``."""
    if not isinstance(code, str) or len(code) != 3:
        raise ValueError(f"orientation must be a 3-letter code such as 'LPS', not {code!r}")
    up = code.upper()
    if any(c not in _AXIS_OF_LETTER for c in up) or len({_AXIS_OF_LETTER[c] for c in up}) != 3:
        raise ValueError(f"orientation {code!r} is not a valid code (one of L/R, one of P/A, one of S/I)")
    return up


def orientation_of(direction) -> str:
    """ITK orientation code of a direction matrix (9 numbers, row-major), as ``DICOMOrient`` sees it."""
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(v) for v in direction])


@dataclass(frozen=True)
class Reorientation:
    """Axis permutation and flips mapping an input grid to a grid with the desired orientation.

    New image axis k is old axis ``perm[k]`` (x, y, z order), reversed when ``flip[k]``.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @property
    def identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def apply_array(self, arr: np.ndarray) -> np.ndarray:
        """Reorient a (D, H, W) = (z, y, x) array (returns a view when possible)."""
        # array axis a corresponds to image axis 2 - a
        axes = tuple(2 - self.perm[2 - a] for a in range(3))
        out = np.transpose(arr, axes)
        flips = tuple(a for a in range(3) if self.flip[2 - a])
        return np.flip(out, flips) if flips else out

    def invert_array(self, arr: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply_array` on a (D, H, W) array of the reoriented grid (returns a view when possible)."""
        flips = tuple(a for a in range(3) if self.flip[2 - a])
        if flips:
            arr = np.flip(arr, flips)
        forward_axes = tuple(2 - self.perm[2 - a] for a in range(3))
        return np.transpose(arr, np.argsort(forward_axes))


def reorientation_for(grid: Grid, code: str) -> Reorientation:
    """The permutation/flips that bring ``grid`` to orientation ``code`` (same choice as ``DICOMOrient``)."""
    code = validate_orientation(code)
    current = orientation_of(grid.direction)
    perm, flip = [], []
    for letter in code:
        axis = _AXIS_OF_LETTER[letter]
        old = next(k for k, c in enumerate(current) if _AXIS_OF_LETTER[c] == axis)
        perm.append(old)
        flip.append(current[old] != letter)
    return Reorientation(tuple(perm), tuple(flip))


def reorient_grid(grid: Grid, reo: Reorientation) -> Grid:
    """The grid of the reoriented image: same voxel centres, permuted/flipped axes."""
    d = grid.matrix
    cols = []
    corner = np.zeros(3)
    for k in range(3):
        old = reo.perm[k]
        sign = -1.0 if reo.flip[k] else 1.0
        cols.append(sign * d[:, old])
        if reo.flip[k]:
            corner[old] = grid.size[old] - 1
    new_dir = np.stack(cols, axis=1)
    return Grid(
        size=tuple(grid.size[p] for p in reo.perm),
        spacing=tuple(grid.spacing[p] for p in reo.perm),
        origin=tuple(float(v) for v in grid.index_to_physical(corner)),
        direction=tuple(float(v) for v in new_dir.reshape(-1)),
    )
