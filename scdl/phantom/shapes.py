"""Implicit shape primitives evaluated on blocks of voxel coordinates (mm, LPS patient frame).

Coordinates are passed as a float32 array ``q`` of shape (3, ...) holding x (patient's left), y (posterior)
and z (superior) in mm. Every primitive answers ``inside(q, grow_mm)`` (a boolean array of shape ``...``)
and ``bounds(grow_mm)`` (an axis-aligned box (2, 3) in mm) for cropping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation (3, 3) = Rz @ Ry @ Rx for angles (about x, about y, about z) in degrees."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _apply(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``matrix`` (3, 3) applied to every point of ``q`` (3, ...) -> (3, ...), float32."""
    m = matrix.astype(np.float32)
    return np.einsum("ij,j...->i...", m, q)


@dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid: centre (mm), semi-axes (mm) and rotation angles (deg, about x, y, z)."""

    center: tuple[float, float, float]
    semi: tuple[float, float, float]
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def inside(self, q: np.ndarray, grow_mm: float = 0.0) -> np.ndarray:
        c = np.asarray(self.center, dtype=np.float32).reshape((3,) + (1,) * (q.ndim - 1))
        local = q - c
        if any(self.angles):
            local = _apply(rotation_matrix(self.angles).T, local)
        semi = np.asarray(self.semi, dtype=np.float32) + np.float32(grow_mm)
        acc = (local[0] / semi[0]) ** 2
        acc += (local[1] / semi[1]) ** 2
        acc += (local[2] / semi[2]) ** 2
        return acc <= 1.0

    def bounds(self, grow_mm: float = 0.0) -> np.ndarray:
        r = rotation_matrix(self.angles)
        semi = np.asarray(self.semi, dtype=np.float64) + grow_mm
        half = np.sqrt((r ** 2) @ (semi ** 2))  # exact half-extent of a rotated ellipsoid along each axis
        c = np.asarray(self.center, dtype=np.float64)
        return np.stack([c - half, c + half])


@dataclass(frozen=True)
class Tube:
    """Tube around a polyline: points (K, 3) in mm and radii (K,) in mm, linearly interpolated per segment."""

    points: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]

    def inside(self, q: np.ndarray, grow_mm: float = 0.0) -> np.ndarray:
        pts = np.asarray(self.points, dtype=np.float32)
        rad = np.asarray(self.radii, dtype=np.float32) + np.float32(grow_mm)
        shape = (3,) + (1,) * (q.ndim - 1)
        out = np.zeros(q.shape[1:], dtype=bool)
        for k in range(len(pts) - 1):
            a = pts[k].reshape(shape)
            v = (pts[k + 1] - pts[k]).reshape(shape)
            vv = float((v ** 2).sum())
            rel = q - a
            t = np.clip((rel * v).sum(axis=0) / np.float32(vv), 0.0, 1.0)
            d2 = ((rel - t[None] * v) ** 2).sum(axis=0)
            r = rad[k] + t * (rad[k + 1] - rad[k])
            out |= d2 <= r * r
        return out

    def bounds(self, grow_mm: float = 0.0) -> np.ndarray:
        pts = np.asarray(self.points, dtype=np.float64)
        r = (np.asarray(self.radii, dtype=np.float64) + grow_mm)[:, None]
        return np.stack([(pts - r).min(axis=0), (pts + r).max(axis=0)])


Primitive = Ellipsoid | Tube


def union_bounds(prims: Sequence[Primitive], grow_mm: float = 0.0) -> np.ndarray:
    """Axis-aligned box (2, 3) in mm around all ``prims``."""
    boxes = np.stack([p.bounds(grow_mm) for p in prims])
    return np.stack([boxes[:, 0].min(axis=0), boxes[:, 1].max(axis=0)])


def superellipse(x: np.ndarray, y: np.ndarray, a: float, b: float, power: float,
                 cy: float = 0.0) -> np.ndarray:
    """Inside test of the cross-section ``|x/a|^p + |(y - cy)/b|^p <= 1`` (broadcast over x and y)."""
    return (np.abs(x / a) ** power + np.abs((y - cy) / b) ** power) <= 1.0
