"""Target grids (a spacing, or a fixed size) and resampling of SimpleITK images onto a grid.

Both target grids cover the input's physical extent from the same outer edge: voxel 0 of the new grid
starts where voxel 0 of the input starts. For a fixed size this is exactly the convention of
``torch.nn.functional.interpolate(..., mode="trilinear", align_corners=False)`` (output voxel j samples
input coordinate ``(j + 0.5) * n / m - 0.5``), so ITK's linear interpolation reproduces the authors'
resize (tested to float32 precision). For a spacing, the size is ``round(n * s / s')`` and the spacing is
exactly ``s'``. With an integer spacing ratio every input voxel falls unambiguously inside one model
voxel, which makes label maps made of aligned blocks survive the round trip exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scdl.processing.grid import Grid

INTERPOLATORS = ("linear", "nearest", "bspline")


def _edge_aligned(grid: Grid, size: Sequence[int], spacing: Sequence[float]) -> Grid:
    old_sp = np.asarray(grid.spacing, dtype=np.float64)
    new_sp = np.asarray(spacing, dtype=np.float64)
    # centre of new voxel 0 = input edge (-0.5 voxel) + half a new voxel, in the grid's own axes
    shift = (new_sp - old_sp) / 2.0
    origin = np.asarray(grid.origin) + grid.matrix @ shift
    return Grid(
        size=tuple(int(v) for v in size),
        spacing=tuple(float(v) for v in new_sp),
        origin=tuple(float(v) for v in origin),
        direction=grid.direction,
    )


def grid_for_spacing(grid: Grid, spacing_mm: Sequence[float]) -> Grid:
    """Grid with spacing ``spacing_mm`` (x, y, z) covering ``grid``'s extent (size rounded, at least 1)."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.shape != (3,) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive numbers, not {spacing_mm!r}")
    extent = np.asarray(grid.size) * np.asarray(grid.spacing)
    size = np.maximum(np.rint(extent / sp), 1).astype(int)
    return _edge_aligned(grid, size, sp)


def grid_for_size(grid: Grid, size_xyz: Sequence[int]) -> Grid:
    """Grid of ``size_xyz`` voxels (x, y, z) covering exactly ``grid``'s extent (align_corners=False resize)."""
    size = np.asarray(size_xyz, dtype=np.int64)
    if size.shape != (3,) or np.any(size < 1):
        raise ValueError(f"size must be 3 positive integers, not {size_xyz!r}")
    spacing = np.asarray(grid.spacing) * np.asarray(grid.size) / size
    return _edge_aligned(grid, size, spacing)


def resample_to_grid(image, grid: Grid, interpolator: str = "linear", pixel_type=None, default: float = 0.0,
                     extrapolate_nearest: bool = False):
    """Resample a ``SimpleITK.Image`` onto ``grid`` (identity transform: same physical space).

    Args:
        image: the source image (any pixel type; no float64 copy is made for integer sources).
        grid: target geometry.
        interpolator: "linear" (CT, float maps), "nearest" (labels) or "bspline".
        pixel_type: SimpleITK pixel type id of the output (default: the source's).
        default: value of target voxels outside the source.
        extrapolate_nearest: give target voxels outside the source the nearest source value instead.
    """
    import SimpleITK as sitk

    if interpolator not in INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {INTERPOLATORS}, not {interpolator!r}")
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[interpolator]
    f = sitk.ResampleImageFilter()
    f.SetSize([int(v) for v in grid.size])
    f.SetOutputSpacing(grid.spacing)
    f.SetOutputOrigin(grid.origin)
    f.SetOutputDirection(grid.direction)
    f.SetInterpolator(interp)
    f.SetDefaultPixelValue(float(default))
    f.SetOutputPixelType(image.GetPixelID() if pixel_type is None else pixel_type)
    f.SetUseNearestNeighborExtrapolator(bool(extrapolate_nearest))
    return f.Execute(image)
