"""Dice = 2|P ∩ G| / (|P| + |G|): the one definition of the metric (scdl evaluate's scores, validation during
training, the SSL benchmark). The GA-Dice LOSS (scdl.losses.ga_dice) is a training objective, not this metric."""

from __future__ import annotations

import numpy as np


def dice_from_counts(intersection: np.ndarray | float, total: np.ndarray | float) -> np.ndarray:
    """Dice from voxel counts: ``2 intersection / total`` with ``total`` = |P| + |G|; NaN where ``total`` is 0
    (the class is in neither map). Any shape, elementwise; float64."""
    inter = np.asarray(intersection, dtype=np.float64)
    sizes = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2.0 * inter / np.maximum(sizes, 1), np.nan)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of classes 1..C-1 between two integer arrays of the same shape -> float64 (C-1,), NaN if both empty.

    One confusion count of the whole arrays (``np.bincount`` of ``truth * C + pred``), so every class costs
    nothing more than the first.
    """
    joint = np.bincount(truth.reshape(-1).astype(np.int64) * n_classes + pred.reshape(-1).astype(np.int64),
                        minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = np.diag(joint)[1:]
    sizes = joint.sum(axis=1)[1:] + joint.sum(axis=0)[1:]
    return dice_from_counts(inter, sizes)
