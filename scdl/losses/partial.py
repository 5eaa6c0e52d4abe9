"""Losses for partially labeled patches: marginal GA-CE, marginal GA-Dice and the exclusion Dice.

A case annotated for some organs only (a liver study draws the liver) says nothing about the other model
classes: their voxels are *unknown*, not background. Shi et al., "Marginal loss and exclusion loss for
partially supervised multi-organ segmentation" (Medical Image Analysis 2021):

- **marginal loss**: in a patch whose classes ``U`` are not annotated, the probability of ``U`` is merged into
  background, ``p̃_0 = p_0 + Σ_{k∈U} p_k``; the (GA-CE, GA-Dice) losses are computed on the merged
  distribution over ``{0} ∪ A`` (A = the annotated foreground classes). A background voxel of a liver-only case
  may thus be spleen without cost, while a liver voxel must be liver.
- **exclusion loss**: a voxel of an annotated organ is not any not-annotated organ either: for k ∈ U, the
  Dice between ``p_k`` and the union of the annotated organs ``e = Σ_{c∈A} y_c`` is *minimised*.

The annotation of a batch is a bool mask ``annotated`` (B, C): ``annotated[b, c]`` = class c is annotated in
patch b; column 0 (background) is True. Where every entry is True the functions return exactly
:func:`scdl.losses.ga_ce.ga_ce_loss` / :func:`scdl.losses.ga_dice.ga_dice_loss` (the same code runs) and the
exclusion loss is 0.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from scdl.losses._validate import check_dense
from scdl.losses.ga_ce import ga_ce_loss, ga_ce_reduction
from scdl.losses.ga_dice import ga_dice_loss, ga_dice_per_class

__all__ = ["exclusion_dice_loss", "is_partial", "marginal_ga_ce_loss", "marginal_ga_dice_loss", "merge_mask"]


def is_partial(annotated: Optional[Tensor]) -> bool:
    """True when some patch leaves some class not annotated (``annotated`` (B, C) bool, or None = all)."""
    return annotated is not None and not bool(annotated.all())


def _check_annotated(annotated: Tensor, pred: Tensor, name: str) -> Tensor:
    if annotated.shape != pred.shape[:2]:
        raise ValueError(f"{name}: annotated {tuple(annotated.shape)} does not match prediction "
                         f"{tuple(pred.shape)} (expected (B, C)).")
    if not bool(annotated[:, 0].all()):
        raise ValueError(f"{name}: background (column 0 of annotated) must be True for every patch.")
    return annotated.to(device=pred.device, dtype=torch.bool)


def merge_mask(annotated: Tensor) -> Tensor:
    """(B, C) bool: the classes merged into background per patch, ``{0} ∪ not-annotated``."""
    merged = ~annotated
    merged[:, 0] = True
    return merged


def _spatial(t: Tensor, b_c: Tensor) -> Tensor:
    """Broadcast a (B, C) tensor over the spatial axes of ``t`` (B, C, *spatial)."""
    return b_c.reshape(b_c.shape + (1,) * (t.dim() - 2))


def marginal_ga_ce_loss(logits: Tensor, target: Tensor, annotated: Optional[Tensor] = None, k: float = 10.0,
                        gamma: float = 0.5, eps: float = 1e-10) -> Tensor:
    """GA-CE (top-k% CE, per-class normalisation) of the marginal distribution of each patch.

    The CE of a voxel labeled c ∈ A is ``-log p_c``; of a voxel labeled 0 it is ``-log(p_0 + Σ_{U} p_k)``
    (log-sum-exp of the log-probabilities of ``{0} ∪ U``). Then as GA-CE: the top K = floor(N·k/100) voxels,
    class i's kept CE divided by ``(n_i + eps)^(1-γ) · K^γ``, summed over classes.

    Args:
        logits: (B, C, *spatial) scores.
        target: (B, *spatial) labels in [0, C); voxels of a not-annotated class must already be 0.
        annotated: (B, C) bool or None (= every class annotated: exactly :func:`ga_ce_loss`).
        k, gamma, eps: as GA-CE.

    Returns:
        scalar tensor.
    """
    if not is_partial(annotated):
        return ga_ce_loss(logits, target, k, gamma, eps)
    check_dense(logits, target, "marginal GA-CE")
    annotated = _check_annotated(annotated, logits, "marginal GA-CE")
    log_p = torch.log_softmax(logits, dim=1)
    merged = _spatial(log_p, merge_mask(annotated))
    log_bg = torch.logsumexp(log_p.masked_fill(~merged, float("-inf")), dim=1)         # (B, *spatial)
    labels = target.long()
    log_true = torch.gather(log_p, 1, labels.unsqueeze(1)).squeeze(1)
    ce = -torch.where(labels == 0, log_bg, log_true)
    return ga_ce_reduction(ce, labels, logits.shape[1], k, gamma, eps)


def marginal_ga_dice_loss(probs: Tensor, target: Tensor, annotated: Optional[Tensor] = None,
                          eps: float = 1e-10) -> Tensor:
    """GA-Dice of the marginal distribution: each class over the patches that annotate it.

    Per patch b the probabilities become ``q_b0 = p_b0 + Σ_{k∈U_b} p_bk`` and ``q_bc = p_bc`` (c ∈ A_b). Class c's
    sums run over the patches P_c that annotate it (every patch for background): present in their labels,
    ``1 - (2 Σ q_c y_c + eps) / (Σ q_c² + Σ y_c + eps)``; absent, ``Σ stopgrad(q_c / N_c) · q_c`` with N_c the
    voxels of P_c. The loss is the mean over the classes annotated in at least one patch.

    Args:
        probs: (B, C, *spatial) softmax probabilities.
        target: (B, *spatial) labels; voxels of a not-annotated class must already be 0.
        annotated: (B, C) bool or None (= all: exactly :func:`ga_dice_loss`).
        eps: smoothing constant.

    Returns:
        scalar tensor.
    """
    if not is_partial(annotated):
        return ga_dice_loss(probs, target, eps)
    check_dense(probs, target, "marginal GA-Dice")
    annotated = _check_annotated(annotated, probs, "marginal GA-Dice")
    n_classes = probs.shape[1]
    merged = merge_mask(annotated)
    keep = _spatial(probs, annotated.to(probs.dtype))
    bg = (probs * _spatial(probs, merged.to(probs.dtype))).sum(dim=1)                    # (B, *spatial)
    q = probs * keep                                                                     # 0 where not annotated
    q = torch.cat([bg.unsqueeze(1), q[:, 1:]], dim=1)
    spatial_dims = list(range(2, probs.dim()))
    onehot = F.one_hot(target.long(), n_classes).movedim(-1, 1).to(probs.dtype)
    intersection = (q * onehot).sum(spatial_dims).sum(0)
    p_sq = (q * q).sum(spatial_dims).sum(0)
    y_sq = (onehot * keep).sum(spatial_dims).sum(0)
    voxels_per_patch = float(target[0].numel())
    n_vox = annotated.to(probs.dtype).sum(0) * voxels_per_patch                         # N_c, (C,)
    absent_term = (q.detach() * q).sum(spatial_dims).sum(0) / n_vox.clamp_min(1.0)
    per_class = ga_dice_per_class(intersection, p_sq, y_sq, absent_term, eps)
    used = annotated.any(dim=0)
    return per_class[used].mean()


def exclusion_dice_loss(probs: Tensor, target: Tensor, annotated: Optional[Tensor] = None,
                        eps: float = 1e-10) -> Tensor:
    """Exclusion Dice: the not-annotated classes must stay off the annotated organs.

    For class k, over the patches P'_k that do NOT annotate it, ``e`` = the union of their annotated organs
    (voxels with label > 0) and the term is ``(2 Σ e p_k + eps) / (Σ e + Σ p_k + eps)`` (a Dice coefficient,
    minimised). The loss is the mean over classes not annotated in some patch whose patches hold an organ;
    0 when every class is annotated (or no annotated organ is in view).

    Args:
        probs: (B, C, *spatial) softmax probabilities.
        target: (B, *spatial) labels.
        annotated: (B, C) bool or None.
        eps: smoothing constant.

    Returns:
        scalar tensor (0 with a gradient path when nothing is excluded).
    """
    if not is_partial(annotated):
        return probs.sum() * 0.0
    check_dense(probs, target, "exclusion Dice")
    annotated = _check_annotated(annotated, probs, "exclusion Dice")
    spatial_dims = list(range(2, probs.dim()))
    organ = (target > 0).to(probs.dtype).unsqueeze(1)                                   # (B, 1, *spatial)
    excluded = _spatial(probs, (~annotated).to(probs.dtype))                              # (B, C, 1...)
    inter = (probs * organ * excluded).sum(spatial_dims).sum(0)                           # (C,)
    e_sum = (organ * excluded).sum(spatial_dims).sum(0)
    p_sum = (probs * excluded).sum(spatial_dims).sum(0)
    per_class = (2.0 * inter + eps) / (e_sum + p_sum + eps)
    used = e_sum > 0
    if not bool(used.any()):
        return probs.sum() * 0.0
    return per_class[used].mean()
