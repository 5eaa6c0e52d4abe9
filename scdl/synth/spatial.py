"""Spatial augmentation of an anatomy layout before synthesis (all arrays (D, H, W), nearest neighbour).

- :func:`elastic`: a smooth random displacement field (amplitude ``elastic_mm``, correlation length
  ``elastic_scale_mm``) applied to structures, depth and labels together;
- :func:`shrink_organs`: each organ (label value > 0) is, with probability ``p``, eroded by up to
  ``max_mm`` using the depth map (voxels with depth below the drawn amount become unlabeled body tissue):
  per-organ size variation without resampling. Growth is not implemented (a grown organ would overwrite its
  neighbours' labels).

Rotation, global scaling, flips and short-scan crops are applied after synthesis by the training augmenter
(``scdl.training.augment``: ``affine``, ``flip``, ``slab``), on image and labels together.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scdl.synth.fields import smooth_field


def elastic(arrays: Sequence[np.ndarray], spacing_zyx: Sequence[float], rng: np.random.Generator,
            amplitude_mm: float, scale_mm: float) -> list[np.ndarray]:
    """Warp every array of ``arrays`` (same shape) by one smooth random displacement (nearest neighbour)."""
    from scipy.ndimage import map_coordinates

    shape = arrays[0].shape
    if amplitude_mm <= 0:
        return [np.asarray(a) for a in arrays]
    axes = [np.arange(n) * float(s) for n, s in zip(shape, spacing_zyx)]
    field = smooth_field(rng, axes, scale_mm, amplitude_mm, n_fields=3)           # mm, (3, D, H, W)
    grid = np.indices(shape, dtype=np.float32)
    for axis in range(3):
        grid[axis] += field[axis] / np.float32(spacing_zyx[axis])
    return [map_coordinates(np.asarray(a), grid, order=0, mode="nearest") for a in arrays]


def shrink_organs(structures: np.ndarray, depth: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                  p: float, max_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Erode organs of ``label`` (model classes) by a random depth each; returns (structures, label)."""
    if p <= 0 or max_mm <= 0:
        return structures, label
    structures, label = structures.copy(), label.copy()
    for value in np.unique(label):
        if value <= 0 or rng.random() >= p:
            continue
        amount = rng.uniform(0.0, max_mm)
        rim = (label == value) & (depth < amount)
        inside = (label == value) & ~rim
        if inside.any():                      # never erase an organ completely
            structures[rim] = 0
            label[rim] = 0
    return structures, label
