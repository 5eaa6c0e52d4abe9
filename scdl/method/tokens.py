"""Voxel tokens of the decoder feature and their exact class proportions (METHOD.md §4.1, §4.7)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def pool_tokens(features: Tensor, grid: Sequence[int]) -> Tensor:
    """Adaptive-average-pool a feature map to a token grid.

    Args:
        features: (B, F, D, H, W), e.g. the VNet's x9.
        grid: (T1, T2, T3) token grid.

    Returns:
        tokens (B, L, F) with L = T1·T2·T3, in C order of the grid (last axis fastest).
    """
    pooled = F.adaptive_avg_pool3d(features, tuple(int(t) for t in grid))
    return pooled.flatten(2).transpose(1, 2)


def class_proportions(labels: Tensor, n_classes: int, grid: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """Exact class proportions of each token: adaptive average pool of the one-hot labels.

    Args:
        labels: (B, D, H, W) integer labels in [0, n_classes).
        n_classes: C, background included.
        grid: (T1, T2, T3), the same grid as :func:`pool_tokens`.
        dtype: floating dtype of the result.

    Returns:
        y_dist (B, L, C); every row sums to 1 (up to rounding); classes absent from a token get 0.
    """
    onehot = F.one_hot(labels.long(), n_classes).movedim(-1, 1).to(dtype)
    return pool_tokens(onehot, grid)


def class_tokens(x: Tensor, y_dist: Tensor, min_mass: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Class tokens of labeled patches: the y_dist-weighted mean token of each present class (SAC, §4.7).

    For patch b and class c with token mass m = Σ_l y_dist[b, l, c] > ``min_mass``:
    ``x_cls = Σ_l y_dist[b, l, c] · x[b, l] / m``.

    Args:
        x: (B, L, F) tokens.
        y_dist: (B, L, C) token class proportions.
        min_mass: classes with less token mass in a patch are skipped for that patch.

    Returns:
        x_cls (K, F) and their class ids y_cls (K,) (int64), one row per (patch, present class),
        patch-major then class order.
    """
    mass = y_dist.sum(dim=1)  # (B, C)
    sums = torch.einsum("blc,blf->bcf", y_dist, x)  # (B, C, F)
    present = mass > min_mass
    x_cls = sums[present] / mass[present].unsqueeze(-1)
    y_cls = torch.nonzero(present, as_tuple=False)[:, 1]
    return x_cls, y_cls


def partial_token_weights(y_dist: Tensor, bi: Tensor, annotated: Tensor) -> Tensor:
    """Token class weights of partially annotated patches (SCDL's labeled weights, scdl.losses.partial).

    In patch b the background column of ``y_dist`` holds the mass of background AND of the classes U_b that
    the case does not annotate (their voxels are unknown). That mass is shared over ``{0} ∪ U_b`` in
    proportion to the token's own soft assignment ``bi`` (as unlabeled tokens are weighted); the annotated
    foreground columns keep their exact proportions. Patches with every class annotated are returned as
    they are.

    Args:
        y_dist: (B, L, C) token class proportions (not-annotated classes 0).
        bi: (B, L, C) soft assignments of the same tokens (used as constants).
        annotated: (B, C) bool, column 0 True.

    Returns:
        (B, L, C) weights; every row keeps the sum of its ``y_dist`` row.
    """
    merged = ~annotated.to(device=y_dist.device, dtype=torch.bool)
    merged[:, 0] = True
    full = ~merged[:, 1:].any(dim=1)                                   # (B,) patches with every class annotated
    share = bi.detach().to(y_dist.dtype) * merged[:, None, :].to(y_dist.dtype)
    norm = share.sum(dim=-1, keepdim=True)
    fallback = merged[:, None, :].to(y_dist.dtype) / merged.sum(dim=1).to(y_dist.dtype)[:, None, None]
    share = torch.where(norm > 0, share / norm.clamp_min(torch.finfo(y_dist.dtype).tiny), fallback)
    spread = y_dist * (~merged)[:, None, :].to(y_dist.dtype) + y_dist[..., :1] * share
    return torch.where(full[:, None, None], y_dist, spread)


def annotated_anchor_proportions(y_dist: Tensor, annotated: Tensor) -> Tensor:
    """``y_dist`` for SAC's class tokens of partially annotated patches: their background column is zeroed
    (it mixes background with unknown organs, so it is no anchor of class 0). (B, L, C) -> (B, L, C)."""
    partial = (~annotated.to(device=y_dist.device, dtype=torch.bool)[:, 1:]).any(dim=1)
    out = y_dist.clone()
    out[partial, :, 0] = 0
    return out
