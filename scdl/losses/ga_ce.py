"""GA-CE(k, γ) (METHOD.md §2): top-k% cross-entropy, re-weighted per class against imbalance."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scdl.losses._validate import check_dense


def ga_ce_loss(logits: Tensor, target: Tensor, k: float = 10.0, gamma: float = 0.5, eps: float = 1e-10) -> Tensor:
    """GA-CE: voxel-wise cross-entropy, keep the top k% voxels, normalise each class by its kept count.

    With N voxels in the batch, K = floor(N·k/100) voxels of highest CE are kept. For each class i with
    n_i kept voxels, ``w_i = (n_i + eps)^(1-γ) · K^γ``; the loss is ``Σ_i (Σ kept CE of class i) / w_i``.
    γ = 1 gives the plain mean over kept voxels; γ = 0 the sum of the per-class means.

    Args:
        logits: (B, C, *spatial) unnormalised scores.
        target: (B, *spatial) integer labels in [0, C) (ground truth, or another network's argmax for CPS).
        k: percentage of voxels kept (10 supervised, 100 for CPS).
        gamma: balance exponent γ (0.5 in the paper).
        eps: added to n_i.

    Returns:
        scalar tensor, in the dtype of ``logits``.
    """
    check_dense(logits, target, "GA-CE")
    if not 0.0 < k <= 100.0:
        raise ValueError(f"GA-CE: k must be a percentage in (0, 100], got {k}.")
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    return ga_ce_reduction(ce, target, logits.shape[1], k, gamma, eps)


def ga_ce_reduction(ce: Tensor, target: Tensor, n_classes: int, k: float = 10.0, gamma: float = 0.5,
                    eps: float = 1e-10) -> Tensor:
    """GA-CE's reduction of voxel-wise cross-entropies: the top k% voxels, class-balanced (the one copy, used by
    :func:`ga_ce_loss` and :func:`scdl.losses.partial.marginal_ga_ce_loss`).

    Args:
        ce: (B, *spatial) cross-entropy of every voxel.
        target: (B, *spatial) integer labels in [0, ``n_classes``).
        n_classes: C.
        k, gamma, eps: as :func:`ga_ce_loss`.

    Returns:
        scalar ``Σ_i (Σ kept CE of class i) / ((n_i + eps)^(1-γ) · K^γ)``, K = max(1, floor(N·k/100)).
    """
    ce = ce.reshape(-1)
    labels = target.reshape(-1).long()
    n_total = ce.numel()
    n_kept = max(1, int(math.floor(n_total * k / 100.0)))
    if n_kept < n_total:
        ce, index = torch.topk(ce, n_kept, sorted=False)
        labels = labels[index]
    ce_sum = torch.zeros(n_classes, dtype=ce.dtype, device=ce.device).index_add_(0, labels, ce)
    counts = torch.bincount(labels, minlength=n_classes).to(ce.dtype)
    weights = (counts + eps).pow(1.0 - gamma) * float(n_kept) ** gamma
    return (ce_sum / weights).sum()


class GACELoss(nn.Module):
    """Module form of :func:`ga_ce_loss`. forward(logits (B, C, ...), target (B, ...)) -> scalar."""

    def __init__(self, k: float = 10.0, gamma: float = 0.5, eps: float = 1e-10):
        super().__init__()
        self.k, self.gamma, self.eps = k, gamma, eps

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return ga_ce_loss(logits, target, self.k, self.gamma, self.eps)
