"""Validation during training: sliding-window prediction on the validation cases at model resolution.

The ensemble's logits are averaged (as in inference, METHOD.md §2) over MONAI's
``sliding_window_inference``; Dice per foreground class is computed on the preprocessed grid from one
confusion count per case. A class absent from both prediction and ground truth of a case is NaN for that
case (skipped in means); absent from one only: Dice 0.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from scdl.models.card import DEFAULT_BLENDING
from scdl.training.cache import CachedCase


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of classes 1..C-1 between two integer arrays of the same shape -> float64 (C-1,), NaN if both empty."""
    joint = np.bincount(truth.reshape(-1).astype(np.int64) * n_classes + pred.reshape(-1).astype(np.int64),
                        minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = np.diag(joint)[1:].astype(np.float64)
    sizes = joint.sum(axis=1)[1:] + joint.sum(axis=0)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2.0 * inter / np.maximum(sizes, 1), np.nan)
    return dice


class _Ensemble(nn.Module):
    def __init__(self, networks: Sequence[nn.Module]):
        super().__init__()
        self.networks = list(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.networks[0](x)
        for net in self.networks[1:]:
            out = out + net(x)
        return out / len(self.networks)


@torch.no_grad()
def validate(networks: Sequence[nn.Module], cases: Sequence[CachedCase], patch: Sequence[int], n_classes: int,
             device: torch.device, *, overlap: float = 0.5, sw_batch_size: int = 2, mode: str = DEFAULT_BLENDING.value,
             amp: bool = True, progress: Any = None,
             annotated: Optional[Sequence[np.ndarray]] = None) -> dict[str, Any]:
    """Mean logits of ``networks`` on every case, Dice per class.

    Args:
        cases: cached labeled cases (image (D, H, W) float32, label (D, H, W)).
        patch: window (D, H, W).
        annotated: per case a bool (C,) of its annotated classes (None: every class of every case).
    Returns:
        ``{"dice": [C-1 floats, NaN where no case has the class], "mean_dice": float, "per_case": [[...], ...],
        "found": [C-1 floats: share of the cases whose ground truth has the class where the prediction has
        at least one voxel of it; NaN where no case has the class]}`` (a class that never fires shows as 0).
    """
    from monai.inferers import sliding_window_inference

    was_training = [net.training for net in networks]
    for net in networks:
        net.eval()
    ensemble = _Ensemble(networks)
    per_case, found = [], []
    use_amp = bool(amp) and device.type == "cuda"
    try:
        for case in cases:
            if progress is not None:
                progress.check_cancelled()
            x = torch.from_numpy(np.array(case.image, dtype=np.float32))[None, None].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = sliding_window_inference(x, tuple(int(p) for p in patch), int(sw_batch_size), ensemble,
                                                  overlap=float(overlap), mode=mode)
            pred = torch.as_tensor(logits).float().argmax(dim=1)[0].cpu().numpy()
            truth = np.asarray(case.label)
            dice = dice_per_class(pred, truth, n_classes)
            in_truth = np.bincount(truth.reshape(-1).astype(np.int64), minlength=n_classes)[1:n_classes] > 0
            in_pred = np.bincount(pred.reshape(-1).astype(np.int64), minlength=n_classes)[1:n_classes] > 0
            hit = np.where(in_truth, in_pred.astype(np.float64), np.nan)
            if annotated is not None:
                dice = np.where(np.asarray(annotated[len(per_case)], dtype=bool)[1:], dice, np.nan)
                hit = np.where(np.asarray(annotated[len(per_case)], dtype=bool)[1:], hit, np.nan)
            per_case.append(dice)
            found.append(hit)
    finally:
        for net, flag in zip(networks, was_training):
            net.train(flag)
    stacked = np.stack(per_case) if per_case else np.full((1, n_classes - 1), np.nan)
    with np.errstate(invalid="ignore"):
        dice = np.array([np.nanmean(col) if np.isfinite(col).any() else np.nan for col in stacked.T])
    mean = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    hits = np.stack(found) if found else np.full((1, n_classes - 1), np.nan)
    with np.errstate(invalid="ignore"):
        found_share = [float(np.nanmean(col)) if np.isfinite(col).any() else float("nan") for col in hits.T]
    return {"dice": [float(d) for d in dice], "mean_dice": mean, "per_case": [[float(v) for v in c] for c in per_case],
            "found": found_share}
