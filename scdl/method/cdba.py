"""Class-distribution bidirectional alignment losses (METHOD.md §4.6): P2E, E2P and the KL term."""

from __future__ import annotations

from torch import Tensor


def p2e_loss(sim: Tensor, w: Tensor) -> Tensor:
    """Proxy contrast ``mean_{l,c} exp(-(E⁺ - E⁻))`` with ``E⁺ = mean_s(a·w)``, ``E⁻ = mean_s(a·(1-w))``.

    Args:
        sim: (B, L, C) mean similarity ā = mean_s ⟨ẑ_l, û_{c,s}⟩ (w does not depend on s, so
            mean_s(a·w) = w·ā).
        w: (B, L, C) token weights (y_dist or the detached joint assignment).
    """
    return (-(w * sim - (1.0 - w) * sim)).exp().mean()


def e2p_loss(sim: Tensor, w: Tensor) -> Tensor:
    """Distribution consistency ``mean_l Σ_c w[l, c] · mean_s(1 - a_{l,c,s})``; sim, w (B, L, C)."""
    return (w * (1.0 - sim)).sum(dim=-1).mean()


def symmetric_kl(p_p2e: Tensor, p_e2p: Tensor, clamp: float = 1e-8, reduction: str = "batch") -> Tensor:
    """``KL(P_p2e‖P_e2p) + KL(P_e2p‖P_p2e)`` summed over tokens and classes, divided by the batch size B
    (``reduction="batch"``, METHOD.md §4.6) or by B·L (``"tokens"``).

    Both are laid out (B, L, C). Probabilities are clamped to ``clamp`` before the logs. The sum equals
    Σ (p - q)(log p - log q) / B ≥ 0, exactly 0 when the two are the same tensor (``p2e_axis="classes"``).
    """
    log_p = p_p2e.clamp_min(clamp).log()
    log_q = p_e2p.clamp_min(clamp).log()
    total = (p_p2e * (log_p - log_q)).sum() + (p_e2p * (log_q - log_p)).sum()
    if reduction == "batch":
        return total / p_p2e.shape[0]
    if reduction == "tokens":
        return total / (p_p2e.shape[0] * p_p2e.shape[1])
    raise ValueError(f"reduction must be 'batch' or 'tokens', got {reduction!r}.")
