"""A voxel grid (size, spacing, origin, direction) without pixel data, and its index <-> physical maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D image in ITK conventions (all vectors in image axis order x, y, z; LPS millimetres).

    Attributes:
        size: voxels along x, y, z (the NumPy array of such an image has shape ``size[::-1]`` = (D, H, W)).
        spacing: voxel size in mm along x, y, z.
        origin: physical position (LPS, mm) of the centre of voxel (0, 0, 0).
        direction: 3x3 direction cosines, row-major (column k is the physical direction of axis k).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image) -> "Grid":
        """The grid of a 3D ``SimpleITK.Image``."""
        return cls(
            size=tuple(int(v) for v in image.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """NumPy array shape (D, H, W) = (size z, size y, size x)."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def matrix(self) -> np.ndarray:
        """The direction as a 3x3 float64 array (columns = axis directions)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_physical(self, index_xyz: Sequence[float]) -> np.ndarray:
        """Physical LPS position (mm) of a (continuous) voxel index given in x, y, z order."""
        idx = np.asarray(index_xyz, dtype=np.float64)
        return np.asarray(self.origin) + self.matrix @ (idx * np.asarray(self.spacing))

    def physical_to_index(self, point: Sequence[float]) -> np.ndarray:
        """Continuous voxel index (x, y, z) of a physical LPS point (mm)."""
        offset = np.asarray(point, dtype=np.float64) - np.asarray(self.origin)
        return np.linalg.solve(self.matrix, offset) / np.asarray(self.spacing)

    def apply_to(self, image) -> None:
        """Copy spacing, origin and direction onto a ``SimpleITK.Image`` of the same size."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    def close_to(self, other: "Grid", tol: float = 1e-4) -> bool:
        """Same size, and spacing / origin / direction equal within ``tol`` (relative to the spacing for origins)."""
        if self.size != other.size:
            return False
        sp_a, sp_b = np.asarray(self.spacing), np.asarray(other.spacing)
        if np.any(np.abs(sp_a - sp_b) > tol * np.maximum(sp_a, 1e-12)):
            return False
        if np.any(np.abs(np.asarray(self.origin) - np.asarray(other.origin)) > tol * float(sp_a.min())):
            return False
        return bool(np.all(np.abs(self.matrix - other.matrix) <= tol))

    def describe(self) -> str:
        """One line for messages: size, spacing, origin, orientation."""
        sz = "x".join(str(v) for v in self.size)
        sp = ", ".join(f"{v:g}" for v in self.spacing)
        org = ", ".join(f"{v:.4g}" for v in self.origin)
        return f"{sz} voxels, spacing ({sp}) mm, origin ({org})"
