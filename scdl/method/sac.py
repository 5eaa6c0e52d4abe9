"""Semantic anchor constraints (METHOD.md §4.7): pull each proxy mean toward its labeled class anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_anchors(z_cls: Tensor, y_cls: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Anchors: ``normalise(stopgrad(mean of z_cls over the rows of class c)))``.

    Args:
        z_cls: (K, D) embedded class tokens; y_cls: (K,) their class ids.
        n_classes: C.

    Returns:
        anchors (C, D) (zero rows for absent classes) and ``present`` (C,) bool.
    """
    z_cls = z_cls.detach()
    sums = torch.zeros(n_classes, z_cls.shape[1], dtype=z_cls.dtype, device=z_cls.device).index_add_(0, y_cls, z_cls)
    counts = torch.bincount(y_cls, minlength=n_classes)
    present = counts > 0
    means = sums / counts.clamp_min(1).unsqueeze(-1).to(z_cls.dtype)
    return F.normalize(means, dim=-1), present


def sac_loss(z_cls: Tensor, y_cls: Tensor, mu_hat: Tensor) -> Tensor:
    """``mean over present classes of (1 - ⟨anchor_c, μ̂_c⟩)``; only ``mu_hat`` receives a gradient.

    Args:
        z_cls: (K, D) unit embeddings of class tokens (detached here).
        y_cls: (K,) class ids in [0, C).
        mu_hat: (C, D) unit proxy means.

    Returns:
        scalar; 0 (attached to ``mu_hat``) when no class is present.
    """
    anchors, present = class_anchors(z_cls, y_cls, mu_hat.shape[0])
    cos = (anchors * mu_hat).sum(dim=-1)
    if not bool(present.any()):
        return (mu_hat * 0.0).sum()
    return (1.0 - cos[present]).mean()
