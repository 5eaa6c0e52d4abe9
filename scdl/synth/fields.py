"""Smooth random fields and correlated noise on a regular grid, vectorised and deterministic.

A smooth field is a lattice of random control values (spacing ``scale_mm``) interpolated to every voxel with
normalised Gaussian weights, applied separably along each axis as three small matrix products. This costs
O(voxels x control points per axis), far less than ``scipy.ndimage.zoom`` with cubic splines. Measured on
this 2-core machine for one field on the 128 x 128 x 80 grid (best of 3): 2 ms (40 mm lattice) and 9 ms
(14 mm lattice) against 0.94 s for ``zoom(order=3)`` of an 8 x 11 x 11 lattice.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _weights(coords: np.ndarray, scale_mm: float) -> np.ndarray:
    """Interpolation matrix (n_voxels, n_controls) for one axis: Gaussian weights normalised per voxel."""
    lo, hi = float(coords.min()), float(coords.max())
    n_ctrl = int(np.ceil((hi - lo) / scale_mm)) + 3
    ctrl = lo - scale_mm + scale_mm * np.arange(n_ctrl)
    w = np.exp(-0.5 * ((coords[:, None] - ctrl[None, :]) / scale_mm) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32)


def smooth_field(rng: np.random.Generator, axes_mm: Sequence[np.ndarray], scale_mm: float,
                 amplitude: float, n_fields: int = 1) -> np.ndarray:
    """Random smooth fields on the grid spanned by ``axes_mm``.

    Args:
        rng: random generator (consumed in a fixed order: deterministic for a given state).
        axes_mm: voxel-centre coordinates per array axis, ``(z (D,), y (H,), x (W,))`` in mm.
        scale_mm: spacing of the control lattice (the correlation length of the field).
        amplitude: standard deviation of the field (the control values are scaled so that the
            interpolated field has this standard deviation on average over the grid).
        n_fields: number of independent fields.

    Returns:
        float32 array (n_fields, D, H, W).
    """
    wz, wy, wx = (_weights(np.asarray(a, dtype=np.float64), scale_mm) for a in axes_mm)
    # Interpolation averages the control values: divide by the mean gain so the field's std is ``amplitude``.
    gain = float(np.prod([np.sqrt((w.astype(np.float64) ** 2).sum(axis=1).mean()) for w in (wz, wy, wx)]))
    ctrl = rng.standard_normal((n_fields, wz.shape[1], wy.shape[1], wx.shape[1]), dtype=np.float32)
    ctrl *= np.float32(amplitude / gain)
    out = np.einsum("fabc,xc->fabx", ctrl, wx)        # (f, cz, cy, W)
    out = np.einsum("fabx,yb->fayx", out, wy)         # (f, cz, H, W)
    out = np.einsum("fayx,za->fzyx", out, wz)         # (f, D, H, W)
    return np.ascontiguousarray(out, dtype=np.float32)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int, int],
                     sigma_vox: Sequence[float]) -> np.ndarray:
    """Unit-variance Gaussian noise (D, H, W), correlated by a Gaussian kernel of ``sigma_vox`` per axis.

    The filtered noise is divided by the kernel's exact gain so that its standard deviation stays 1.
    """
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal(shape, dtype=np.float32)
    if any(s > 0 for s in sigma_vox):
        noise = gaussian_filter(noise, sigma=list(sigma_vox), mode="reflect", truncate=3.0)
        gain = float(np.prod([_gaussian_noise_gain_truncated(s) for s in sigma_vox]))
        noise /= np.float32(gain)
    return noise


def _gaussian_noise_gain_truncated(sigma_vox: float, truncate: float = 3.0) -> float:
    """Gain of ``gaussian_filter1d(..., truncate=truncate)`` on unit white noise (1.0 for sigma 0)."""
    if sigma_vox <= 0:
        return 1.0
    radius = int(truncate * sigma_vox + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    k /= k.sum()
    return float(np.sqrt((k ** 2).sum()))
