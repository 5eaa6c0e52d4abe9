"""Cross pseudo supervision (METHOD.md §2): each network learns from the other's hard labels."""

from __future__ import annotations

import math

from torch import Tensor

from scdl.losses.ga_ce import ga_ce_loss


def cps_weight(progress: float, max_weight: float = 0.1, ramp: float = 5.0) -> float:
    """Ramp of the CPS weight: ``max_weight · exp(-ramp · (1 - t)²)`` for training progress t in [0, 1].

    0.1·e⁻⁵ ≈ 6.7e-4 at the start, 0.1 at the end (paper values). t outside [0, 1] is clipped.
    """
    t = min(max(float(progress), 0.0), 1.0)
    return max_weight * math.exp(-ramp * (1.0 - t) ** 2)


def cps_loss(logits_a: Tensor, logits_b: Tensor, k: float = 100.0, gamma: float = 0.5) -> Tensor:
    """``GACE(k, γ)(A, argmax B) + GACE(k, γ)(B, argmax A)`` over all patches given.

    Args:
        logits_a, logits_b: (B, C, *spatial) logits of the two networks on the same patches.
        k, gamma: GA-CE parameters (100 and 0.5 in the paper).

    Returns:
        scalar; the pseudo labels carry no gradient.
    """
    pseudo_a = logits_a.detach().argmax(dim=1)
    pseudo_b = logits_b.detach().argmax(dim=1)
    return ga_ce_loss(logits_a, pseudo_b, k, gamma) + ga_ce_loss(logits_b, pseudo_a, k, gamma)
