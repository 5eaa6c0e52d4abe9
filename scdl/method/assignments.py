"""Soft assignments between token embeddings and class proxies (METHOD.md §4.4)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Assignments(NamedTuple):
    """P_e2p (B, L, C): softmax over classes; P_p2e (B, L, C): softmax over the tokens of one image
    (``p2e_axis="tokens"``) or over classes (``"classes"``); bi (B, L, C): the joint weight,
    ``normalise over c of P_e2p · P_p2e`` (rows sum to 1)."""

    p_e2p: Tensor
    p_p2e: Tensor
    bi: Tensor


def soft_assignments(z: Tensor, mu_hat: Tensor, tau: float = 0.2, tau_p2e: float = 0.2,
                     p2e_axis: str = "tokens") -> Assignments:
    """Embedding→proxy and proxy→embedding assignments and their joint weight.

    Args:
        z: (B, L, D) unit token embeddings ẑ.
        mu_hat: (C, D) unit proxy means μ̂.
        tau: temperature of P_e2p; tau_p2e: temperature of P_p2e.
        p2e_axis: ``"tokens"`` (dim L, per image) or ``"classes"`` (dim C, as the released code).

    Returns:
        :class:`Assignments`, each (B, L, C).
    """
    cos = torch.einsum("bld,cd->blc", z, mu_hat)
    p_e2p = torch.softmax(cos / tau, dim=-1)
    if p2e_axis == "tokens":
        p_p2e = torch.softmax(cos / tau_p2e, dim=1)
    elif p2e_axis == "classes":
        p_p2e = p_e2p if tau_p2e == tau else torch.softmax(cos / tau_p2e, dim=-1)
    else:
        raise ValueError(f"p2e_axis must be 'tokens' or 'classes', got {p2e_axis!r}.")
    joint = p_e2p * p_p2e
    bi = joint / joint.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(joint.dtype).tiny)
    return Assignments(p_e2p, p_p2e, bi)
