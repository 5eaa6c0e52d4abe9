"""GA-Dice (METHOD.md §2): Dice of present classes plus a push-down of classes absent from the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scdl.losses._validate import check_dense


def ga_dice_loss(probs: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """GA-Dice of class probabilities against an integer label map, over the whole batch.

    For each class i (background included): if i occurs anywhere in ``target``,
    ``1 - (2 Σ p_i y_i + eps) / (Σ p_i² + Σ y_i² + eps)``; if it is absent, ``Σ_v stopgrad(p_i(v) / N) · p_i(v)``
    with N the number of voxels (B·D·H·W). The loss is the mean over classes.

    Args:
        probs: (B, C, *spatial) class probabilities (softmax of the logits).
        target: (B, *spatial) integer labels in [0, C).
        eps: smoothing constant (1e-10 in the paper).

    Returns:
        scalar tensor, in the dtype of ``probs``.
    """
    check_dense(probs, target, "GA-Dice")
    n_classes = probs.shape[1]
    dims = [0] + list(range(2, probs.dim()))
    onehot = F.one_hot(target.long(), n_classes).movedim(-1, 1).to(probs.dtype)
    intersection = (probs * onehot).sum(dims)
    p_sq = (probs * probs).sum(dims)
    y_sq = onehot.sum(dims)  # y² = y for one-hot
    n_voxels = target.numel()
    absent_term = ((probs.detach() / n_voxels) * probs).sum(dims)
    return ga_dice_per_class(intersection, p_sq, y_sq, absent_term, eps).mean()


def ga_dice_per_class(intersection: Tensor, p_sq: Tensor, y_sq: Tensor, absent_term: Tensor,
                      eps: float = 1e-10) -> Tensor:
    """GA-Dice per class from its sums (the one copy, used by :func:`ga_dice_loss` and
    :func:`scdl.losses.partial.marginal_ga_dice_loss`): ``1 - (2 Σ p y + eps) / (Σ p² + Σ y + eps)`` for a class
    present in the labels (``y_sq`` > 0), else its ``absent_term`` (the push-down). All arguments (C,); returns (C,)."""
    dice_term = 1.0 - (2.0 * intersection + eps) / (p_sq + y_sq + eps)
    return torch.where(y_sq > 0, dice_term, absent_term)


class GADiceLoss(nn.Module):
    """Module form of :func:`ga_dice_loss`; ``softmax=True`` takes logits. forward(pred (B, C, ...), target (B, ...))."""

    def __init__(self, softmax: bool = True, eps: float = 1e-10):
        super().__init__()
        self.softmax, self.eps = softmax, eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        probs = torch.softmax(pred, dim=1) if self.softmax else pred
        return ga_dice_loss(probs, target, self.eps)
