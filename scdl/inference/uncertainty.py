"""Voxel uncertainty of an ensemble and per-organ confidence.

- Ensemble (M >= 2 networks): the members' disagreement, measured as the mutual information between the
  prediction and the member, ``H(mean_m p_m) - mean_m H(p_m)`` (the generalised Jensen-Shannon divergence of
  the members' softmax distributions). 0 where all members agree exactly.
- One network: the predictive entropy ``H(p)``.

Both are divided by ``ln C`` so that the map lies in [0, 1] whatever the number of classes C.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def _entropy(p: Tensor, dim: int = 1) -> Tensor:
    """Shannon entropy (nats) of probabilities ``p`` along ``dim``."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


def member_uncertainty(logits: Sequence[Tensor]) -> Tensor:
    """Uncertainty of one batch of windows.

    Args:
        logits: M member logits, each (B, C, d, h, w), float32.

    Returns:
        (B, d, h, w) float32 in [0, 1]: normalised mutual information for M >= 2, normalised entropy for M = 1.
    """
    n_classes = logits[0].shape[1]
    scale = 1.0 / math.log(n_classes) if n_classes > 1 else 0.0
    if len(logits) == 1:
        return (_entropy(torch.softmax(logits[0], dim=1)) * scale).clamp_(0.0, 1.0)
    mean_p = None
    mean_h = None
    for member in logits:
        p = torch.softmax(member, dim=1)
        h = _entropy(p)
        mean_p = p if mean_p is None else mean_p.add_(p)
        mean_h = h if mean_h is None else mean_h.add_(h)
    mean_p /= len(logits)
    mean_h /= len(logits)
    return ((_entropy(mean_p) - mean_h) * scale).clamp_(0.0, 1.0)


def organ_confidence(
    labels: np.ndarray, max_prob: np.ndarray, names: Mapping[int, str], min_voxels: int = 1
) -> dict[str, Optional[float]]:
    """Mean max-probability of the ensemble inside each predicted organ.

    Args:
        labels: (D, H, W) integer label map (the network grid).
        max_prob: (D, H, W) the largest softmax probability per voxel (same grid).
        names: label value -> organ name (background 0 is skipped).
        min_voxels: organs with fewer predicted voxels get ``None`` (not predicted).

    Returns:
        organ name -> mean max-probability in [0, 1], or ``None`` when the organ was not predicted.
    """
    flat_labels = labels.ravel()
    n_bins = max(int(flat_labels.max(initial=0)) + 1, max(names, default=0) + 1)
    counts = np.bincount(flat_labels, minlength=n_bins)
    sums = np.bincount(flat_labels, weights=max_prob.ravel().astype(np.float64), minlength=n_bins)
    result: dict[str, Optional[float]] = {}
    for value, name in sorted(names.items()):
        if value == 0:
            continue
        n = int(counts[value]) if value < len(counts) else 0
        result[name] = round(float(sums[value] / n), 4) if n >= min_voxels else None
    return result
