"""Supervised loss of one network on labeled patches (METHOD.md §2): GA-CE(k=10, γ=0.5) + GA-Dice."""

from __future__ import annotations

import torch
from torch import Tensor

from scdl.losses.ga_ce import ga_ce_loss
from scdl.losses.ga_dice import ga_dice_loss


def supervised_loss(
    logits: Tensor,
    target: Tensor,
    k: float = 10.0,
    gamma: float = 0.5,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> Tensor:
    """``ce_weight · GACE(k, γ)(logits, target) + dice_weight · GADice(softmax(logits), target)``.

    Args:
        logits: (B, C, *spatial) of the labeled patches.
        target: (B, *spatial) integer ground truth.
        k, gamma: GA-CE parameters (10 and 0.5 in the paper).
        ce_weight, dice_weight: 1 and 1 in the paper.

    Returns:
        scalar tensor.
    """
    ce = ga_ce_loss(logits, target, k, gamma)
    dice = ga_dice_loss(torch.softmax(logits, dim=1), target)
    return ce_weight * ce + dice_weight * dice
