"""Shape checks shared by the losses."""

from __future__ import annotations

from torch import Tensor


def check_dense(pred: Tensor, target: Tensor, name: str) -> None:
    """``pred`` (B, C, *spatial) against an integer ``target`` (B, *spatial) with values in [0, C)."""
    if pred.dim() < 3 or target.shape != pred.shape[:1] + pred.shape[2:]:
        raise ValueError(f"{name}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} do not match "
                         "(expected (B, C, *spatial) and (B, *spatial)).")
    if target.is_floating_point():
        raise ValueError(f"{name}: the target must hold integer class indices, got {target.dtype}.")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= pred.shape[1]):
        raise ValueError(f"{name}: target values must lie in [0, {pred.shape[1]}), "
                         f"got [{int(target.min())}, {int(target.max())}].")
