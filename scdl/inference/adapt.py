"""Test-time batch-norm statistics: the networks' normalisation re-estimated on the CT being segmented.

A network with batch normalisation keeps, for every normalised channel, the mean and variance of its features
over the training patches (``running_mean``, ``running_var``). A CT from another scanner, contrast phase or body
habitus shifts those features, and the stored statistics then normalise them wrongly: the network's answer
degrades although the anatomy is familiar. AdaBN (Li, Wang, Shi, Liu & Hou, "Revisiting batch normalization for
practical domain adaptation", ICLR workshop 2017 / Pattern Recognition 2018) replaces the stored statistics by
those of the target data; Schneider et al. ("Improving robustness against common corruptions by covariate shift
adaptation", NeurIPS 2020) mix the two, ``(1 - w) * stored + w * target``, which is :func:`adapt_batch_norm`'s
``weight``.

Here the target data are the windows of the one CT being segmented: the volume padded as
:func:`scdl.inference.sliding_window.predict_volume` pads it, tiled by windows of the training patch's size (the
size of the patches whose statistics the networks stored, also when ``inference.window_size`` predicts on wider
windows)
(:data:`ADAPT_OVERLAP`), of which those in the body (:data:`ADAPT_MIN_BODY`) go through the networks once, in
batches of :data:`ADAPT_BATCH` as in training, with only the batch-norm layers in training mode; the statistics
of the batches accumulate as a plain average (``momentum=None``). Dropout and every weight stay as they are.
The networks passed in are not modified: adapted copies are returned. No labels, no gradients, no training: the
weights are the package's.

Measured on the default model's validation (docs/inference.md "Test-time batch-norm statistics").
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from scdl.inference.sliding_window import pad_to_window, window_starts

#: Overlap of the windows the statistics are taken from: 0 tiles the volume once (about an eighth of the
#: windows of the prediction's 0.5). Measured on the default model's validation: as good as 0.5 (with
#: :data:`ADAPT_MIN_BODY`; without it, a tiling's corner windows of air spoil the statistics).
ADAPT_OVERLAP = 0.0

#: Windows the statistics are taken from: those whose share of body voxels (above the bottom of the intensity
#: window, i.e. not air and not padding) is at least this fraction of the fullest window's. Windows of mostly
#: air or padding (a scan's corners, the padding of a short scan) shift the statistics away from the training
#: patches, which lie in the body (measured: docs/inference.md).
ADAPT_MIN_BODY = 0.5

#: A voxel of the network input above this value is body (the input is scaled to [0, 1] over the intensity
#: window; 0 is the window's bottom, -125 HU for the default model, and the padding value).
BODY_VALUE = 0.01

#: Windows per forward while the statistics are taken: the batch the networks were trained with (2 labeled +
#: 2 unlabeled patches of the default recipe), so that a batch's statistics are of the kind stored in training.
#: The last batch is filled up with the first windows, so every batch has this size.
ADAPT_BATCH = 4


def batch_norm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``network`` that keep running statistics (an instance-norm network has none)."""
    return [m for m in network.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def adapt_batch_norm(
    networks: Sequence[nn.Module],
    volume: Tensor,
    roi_size: Sequence[int],
    weight: float,
    device: torch.device | str = "cpu",
    *,
    overlap: float = ADAPT_OVERLAP,
    batch_size: int = ADAPT_BATCH,
    min_body: float = ADAPT_MIN_BODY,
    pad_value: float = 0.0,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> list[nn.Module]:
    """Copies of ``networks`` whose batch-norm statistics are ``(1 - weight) * stored + weight * volume's``.

    Args:
        networks: M >= 1 networks (eval mode; not modified), on ``device``.
        volume: (D, H, W) float32 network input (the preprocessed CT, z first), as given to ``predict_volume``.
        roi_size: window size (d, h, w) in voxels.
        weight: in [0, 1]; 0 returns the networks' copies unchanged, 1 the volume's statistics alone.
        device: where the windows run.
        overlap: overlap of the windows in [0, 1) (:data:`ADAPT_OVERLAP`).
        batch_size: windows per forward (:data:`ADAPT_BATCH`).
        min_body: keep the windows whose share of body voxels is at least this fraction of the fullest
            window's (:data:`ADAPT_MIN_BODY`; 0 keeps every window).
        pad_value: padding of a volume smaller than a window (as ``WindowConfig.pad_value``).
        on_batch: called as ``on_batch(done, total)`` after every batch of every network (progress, cancel).

    Returns:
        M networks in eval mode on ``device``.

    Raises:
        ValueError: ``weight`` outside [0, 1] or a volume that is not 3D.
    """
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the batch-norm adaptation weight must be in [0, 1], not {weight}")
    vol = torch.as_tensor(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (D, H, W), got shape {tuple(vol.shape)}")
    roi = tuple(int(s) for s in roi_size)
    adapted = [copy.deepcopy(net).eval() for net in networks]
    layers = [batch_norm_layers(net) for net in adapted]
    if weight == 0.0 or not any(layers):
        return adapted
    vol, _ = pad_to_window(vol.to(torch.float32), roi, pad_value)
    starts = body_windows(vol, roi, overlap, min_body)
    batch_size = max(1, int(batch_size))
    n_batches = -(-len(starts) // batch_size)
    starts = (starts * batch_size)[: n_batches * batch_size]      # the last batch filled up with the first windows
    total = n_batches * len(adapted)
    done = 0
    for net, bns in zip(adapted, layers):
        stored = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None      # cumulative average over the windows
            m.train()
        with torch.no_grad():
            for first in range(0, len(starts), batch_size):
                x = torch.stack([vol[z: z + roi[0], y: y + roi[1], w: w + roi[2]]
                                 for z, y, w in starts[first: first + batch_size]])[:, None]
                net(x.to(device))
                done += 1
                if on_batch:
                    on_batch(done, total)
        for m, (mean, var, momentum) in zip(bns, stored):
            m.running_mean.mul_(weight).add_(mean, alpha=1.0 - weight)
            m.running_var.mul_(weight).add_(var, alpha=1.0 - weight)
            m.momentum = momentum
            m.eval()
    return adapted


def body_windows(volume: Tensor, roi_size: Sequence[int], overlap: float,
                 min_body: float = ADAPT_MIN_BODY) -> list[tuple[int, int, int]]:
    """Start corners of the windows of ``volume`` (padded, (D, H, W)) at ``overlap`` whose share of body voxels
    (> :data:`BODY_VALUE`) is at least ``min_body`` x the fullest window's, in the prediction's order."""
    roi = tuple(int(s) for s in roi_size)
    starts = window_starts(tuple(volume.shape), roi, overlap)
    body = volume > BODY_VALUE
    shares = [float(body[z: z + roi[0], y: y + roi[1], x: x + roi[2]].float().mean()) for z, y, x in starts]
    best = max(shares)
    if best <= 0.0:
        return starts
    return [start for start, share in zip(starts, shares) if share >= float(min_body) * best]
