"""Gaussian class proxies (METHOD.md §4.3): Θ ∈ R^{C×2D}, μ = Θ[:, :D], σ = softplus(Θ[:, D:])."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def init_proxies(n_classes: int, embed_dim: int) -> Tensor:
    """Θ (C, 2D), Xavier-uniform initialised."""
    theta = torch.empty(n_classes, 2 * embed_dim)
    torch.nn.init.xavier_uniform_(theta)
    return theta


def proxy_means(theta: Tensor) -> Tensor:
    """μ (C, D): the first half of every row of Θ (C, 2D)."""
    return theta[:, : theta.shape[1] // 2]


def proxy_sigmas(theta: Tensor) -> Tensor:
    """σ = softplus(Θ[:, D:]) (C, D), always positive."""
    return F.softplus(theta[:, theta.shape[1] // 2 :])


def sample_proxies(theta: Tensor, num_samples: int, eps: Optional[Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Normalised proxy samples û = normalise(μ + σ ⊙ ε), ε ~ N(0, I).

    Args:
        theta: Θ (C, 2D).
        num_samples: S.
        eps: optional noise (C, S, D) to use instead of drawing it (tests inject the reference noise).
        generator: optional random generator for the draw.

    Returns:
        û (C, S, D), unit vectors; differentiable with respect to Θ.
    """
    mu, sigma = proxy_means(theta), proxy_sigmas(theta)
    shape = (theta.shape[0], num_samples, mu.shape[1])
    if eps is None:
        eps = torch.randn(shape, dtype=theta.dtype, device=theta.device, generator=generator)
    elif tuple(eps.shape) != shape:
        raise ValueError(f"proxy noise must have shape {shape} (C, S, D), got {tuple(eps.shape)}.")
    samples = mu.unsqueeze(1) + sigma.unsqueeze(1) * eps.to(theta.dtype)
    return F.normalize(samples, dim=-1)
