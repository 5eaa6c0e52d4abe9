"""Running an ensemble of networks on one batch of windows (CPS trains two: their logits are averaged); the one
ensemble of inference and of validation during training (both through scdl.inference.sliding_window)."""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import Tensor, nn


def autocast_context(device: torch.device, amp: bool):
    """Mixed precision (float16 autocast) on CUDA when ``amp``; a no-op context on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def member_logits(networks: Sequence[nn.Module], x: Tensor, amp: bool = True) -> list[Tensor]:
    """Logits of every member for one batch of windows.

    Args:
        networks: M networks in eval mode, on ``x.device``.
        x: (B, 1, d, h, w) windows.
        amp: float16 autocast on CUDA (ignored on the CPU).

    Returns:
        M tensors (B, C, d, h, w), float32.
    """
    with autocast_context(x.device, amp):
        return [net(x).float() for net in networks]


def mean_logits(logits: Sequence[Tensor]) -> Tensor:
    """Ensemble logits: the mean of the members' (B, C, d, h, w) logits (a new tensor)."""
    total = logits[0].clone()
    for member in logits[1:]:
        total += member
    if len(logits) > 1:
        total /= len(logits)
    return total
