"""Validation during training: sliding-window prediction on the validation cases at model resolution.

The prediction is inference's own (:func:`scdl.inference.sliding_window.predict_volume`: the ensemble's
logits averaged, METHOD.md §2, windows blended as ``scdl segment`` blends them); Dice per foreground class is
:func:`scdl.metrics.dice.dice_per_class` on the preprocessed grid (one confusion count per case). A class absent
from both prediction and ground truth of a case is NaN for that case (skipped in means); absent from one only:
Dice 0.
"""

from __future__ import annotations

from typing import Optional, Sequence, TypedDict

import numpy as np
import torch
from torch import nn

from scdl.inference.config import InferenceSettings
from scdl.inference.sliding_window import WindowConfig, predict_volume
from scdl.metrics.dice import dice_per_class
from scdl.progress import ProgressReporter
from scdl.training.cache import CachedCase


class ValidationScores(TypedDict):
    """What :func:`validate` returns (C: classes with background; the lists cover the C-1 foreground classes)."""

    dice: list[float]
    mean_dice: float
    per_case: list[list[float]]
    found: list[float]


def validate(networks: Sequence[nn.Module], cases: Sequence[CachedCase], patch: Sequence[int], n_classes: int,
             device: torch.device, *, overlap: float = InferenceSettings.overlap, sw_batch_size: int = 2,
             mode: str = InferenceSettings.blending, amp: bool = True, progress: Optional[ProgressReporter] = None,
             annotated: Optional[Sequence[np.ndarray]] = None, bn_adapt: float = 0.0,
             window_size: Optional[Sequence[int]] = None) -> ValidationScores:
    """Mean logits of ``networks`` on every case, Dice per class.

    Args:
        cases: cached labeled cases (image (D, H, W) float32, label (D, H, W)).
        patch: the training patch (D, H, W): the window, and the windows of the test-time statistics.
        overlap, sw_batch_size, mode, amp: the sliding window (:class:`scdl.inference.sliding_window.WindowConfig`).
        annotated: per case a bool (C,) of its annotated classes (None: every class of every case).
        progress: checked for cancellation before each case (None: not cancellable).
        bn_adapt: above 0, each case is predicted by copies of the networks whose batch-norm statistics are mixed
            with the case's own (:func:`scdl.inference.adapt.adapt_batch_norm`, as ``inference.bn_adapt``), taken
            on windows of ``patch``.
        window_size: the prediction's window (D, H, W) instead of ``patch`` (as ``inference.window_size``).
    Returns:
        ``{"dice": [C-1 floats, NaN where no case has the class], "mean_dice": float, "per_case": [[...], ...],
        "found": [C-1 floats: share of the cases whose ground truth has the class where the prediction has
        at least one voxel of it; NaN where no case has the class]}`` (a class that never fires shows as 0).
    """
    window = WindowConfig(roi_size=tuple(int(p) for p in (window_size or patch)), overlap=float(overlap),
                          sw_batch_size=int(sw_batch_size), mode=mode, amp=bool(amp))
    was_training = [net.training for net in networks]
    for net in networks:
        net.eval()
    per_case, found = [], []
    try:
        for case in cases:
            if progress is not None:
                progress.check_cancelled()
            image = np.array(case.image, dtype=np.float32)
            nets = list(networks)
            if bn_adapt > 0.0:
                from scdl.inference.adapt import adapt_batch_norm

                nets = adapt_batch_norm([getattr(n, "module", n) for n in nets],     # DDP: the module itself
                                        torch.from_numpy(image), tuple(int(p) for p in patch), bn_adapt, device)
            pred = predict_volume(image, nets, window, device).labels.numpy()
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
    return ValidationScores(dice=[float(d) for d in dice], mean_dice=mean,
                            per_case=[[float(v) for v in c] for c in per_case], found=found_share)
