"""Supervised loss of one network on labeled patches (METHOD.md §2): GA-CE(k=10, γ=0.5) + GA-Dice.

With partially annotated patches (``annotated`` (B, C) not all True) the two terms are their marginal forms and
an exclusion Dice is added (:mod:`scdl.losses.partial`, Shi et al. 2021); with every class annotated the loss is
exactly the paper's.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from scdl.losses.partial import exclusion_dice_loss, is_partial, marginal_ga_ce_loss, marginal_ga_dice_loss


def supervised_terms(
    logits: Tensor,
    target: Tensor,
    k: float = 10.0,
    gamma: float = 0.5,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    annotated: Optional[Tensor] = None,
    exclusion_weight: float = 1.0,
) -> dict[str, Tensor]:
    """The weighted terms ``ce``, ``dice``, ``exclusion`` and their sum ``total``.

    Args:
        logits: (B, C, *spatial) of the labeled patches.
        target: (B, *spatial) integer ground truth (not-annotated classes already 0).
        k, gamma: GA-CE parameters (10 and 0.5 in the paper).
        ce_weight, dice_weight: 1 and 1 in the paper.
        annotated: (B, C) bool, class c annotated in patch b; None = every class (the paper's setting).
        exclusion_weight: weight of the exclusion Dice (1: Shi et al. add it unweighted); unused when every
            class is annotated.

    Returns:
        dict of scalars; ``exclusion`` is 0 when every class is annotated.
    """
    probs = torch.softmax(logits, dim=1)
    ce = ce_weight * marginal_ga_ce_loss(logits, target, annotated, k, gamma)
    dice = dice_weight * marginal_ga_dice_loss(probs, target, annotated)
    total = ce + dice
    exclusion = logits.new_zeros(())
    if is_partial(annotated) and exclusion_weight:
        exclusion = exclusion_weight * exclusion_dice_loss(probs, target, annotated)
        total = total + exclusion
    return {"ce": ce, "dice": dice, "exclusion": exclusion, "total": total}


def supervised_loss(
    logits: Tensor,
    target: Tensor,
    k: float = 10.0,
    gamma: float = 0.5,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    annotated: Optional[Tensor] = None,
    exclusion_weight: float = 1.0,
) -> Tensor:
    """``ce_weight · GACE(k, γ)(logits, target) + dice_weight · GADice(softmax(logits), target)``
    (+ ``exclusion_weight · exclusion`` for partial annotations); see :func:`supervised_terms`.

    Returns:
        scalar tensor.
    """
    return supervised_terms(logits, target, k, gamma, ce_weight, dice_weight, annotated, exclusion_weight)["total"]
