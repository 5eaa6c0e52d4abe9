"""The SCDL head (METHOD.md §4): embedding MLP + Gaussian class proxies + CDBA, KL and SAC losses."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scdl.method.assignments import Assignments, soft_assignments
from scdl.method.cdba import e2p_loss, p2e_loss, symmetric_kl
from scdl.method.config import SCDLConfig
from scdl.method.embedding import embedding_mlp
from scdl.method.proxies import init_proxies, proxy_means, sample_proxies
from scdl.method.sac import sac_loss
from scdl.losses.partial import is_partial
from scdl.method.tokens import annotated_anchor_proportions, class_tokens, partial_token_weights

#: Initial value of ``sigma_emb`` (as in the authors' reference state).
SIGMA_EMB_INIT = 0.05


class SCDLHead(nn.Module):
    """Training-time SCDL plug-in. Parameters under the authors' names, so their state loads strictly:
    ``encoder.0/.3/.6`` (embedding MLP), ``proxies`` (Θ, C × 2D) and ``sigma_emb`` (1, 1, 1, D), a
    token-sampling σ of the released module that no loss uses (kept frozen, for checkpoint compatibility).

    Args:
        in_dim: F, the token feature size (the VNet's n_filters).
        n_classes: C, background included.
        config: :class:`SCDLConfig` (paper defaults when None).

    ``forward(x, y_dist=None, eps=None, x_cls=None, y_cls=None)`` -> dict of scalar loss terms; see there.
    """

    def __init__(self, in_dim: int, n_classes: int, config: Optional[SCDLConfig] = None):
        super().__init__()
        self.config = config or SCDLConfig()
        cfg = self.config
        self.in_dim, self.n_classes = in_dim, n_classes
        self.encoder = embedding_mlp(in_dim, cfg.hidden_dim, cfg.embed_dim, cfg.dropout)
        self.proxies = nn.Parameter(init_proxies(n_classes, cfg.embed_dim))
        self.sigma_emb = nn.Parameter(torch.full((1, 1, 1, cfg.embed_dim), SIGMA_EMB_INIT), requires_grad=False)

    # -- pieces -------------------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """Unit embeddings ẑ = normalise(MLP(x)): (..., F) -> (..., D)."""
        return F.normalize(self.encoder(x), dim=-1)

    def proxy_means_unit(self) -> Tensor:
        """μ̂ (C, D), unit proxy means."""
        return F.normalize(proxy_means(self.proxies), dim=-1)

    def assign(self, z: Tensor) -> Assignments:
        """P_e2p, P_p2e and bi (each (B, L, C)) of unit embeddings z (B, L, D)."""
        cfg = self.config
        return soft_assignments(z, self.proxy_means_unit(), cfg.tau, cfg.tau_proxy_to_embedding, cfg.p2e_axis)

    # -- losses -------------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        y_dist: Optional[Tensor] = None,
        eps: Optional[Tensor] = None,
        x_cls: Optional[Tensor] = None,
        y_cls: Optional[Tensor] = None,
        annotated: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        """SCDL loss terms of one batch of tokens.

        Args:
            x: (B, L, F) tokens of B patches. The first ``B_l = len(y_dist)`` patches are labeled, the
                rest unlabeled.
            y_dist: (B_l, L, C) token class proportions of the labeled patches, or None (all unlabeled).
                Labeled tokens are weighted by y_dist, unlabeled ones by stopgrad(bi).
            eps: (C, S, D) proxy noise; drawn from N(0, I) when None.
            x_cls, y_cls: class tokens (K, F) and their ids (K,) for SAC, given directly; by default they
                are built from ``y_dist`` (:func:`scdl.method.tokens.class_tokens`).
            annotated: (B_l, C) bool, the classes annotated in each labeled patch, or None (all). In a
                partial patch the background mass of y_dist is shared over background and the not-annotated
                classes by stopgrad(bi) (:func:`scdl.method.tokens.partial_token_weights`), and SAC takes no
                background anchor from it; with every class annotated nothing changes.

        Returns:
            dict of scalars: ``p2e``, ``e2p``, ``proxy`` (= p2e + e2p_weight·e2p) when ``use_cdba``;
            ``kl`` when ``use_kl``; ``sac`` when ``use_sac`` and labels (or class tokens) are given; and
            ``total`` = lam · (proxy_weight·proxy + sac_weight·sac + kl_weight·kl), the term added to
            the host loss.
        """
        cfg = self.config
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"SCDL tokens must be (B, L, {self.in_dim}), got {tuple(x.shape)}.")
        n_labeled = 0 if y_dist is None else y_dist.shape[0]
        if y_dist is not None and (y_dist.shape[0] > x.shape[0] or y_dist.shape[1:] != (x.shape[1], self.n_classes)):
            raise ValueError(f"y_dist {tuple(y_dist.shape)} does not fit tokens {tuple(x.shape)} and "
                             f"{self.n_classes} classes (expected (B_l <= B, L, C)).")
        z = self.embed(x) if (cfg.use_cdba or cfg.use_kl) else None   # the MLP may run under autocast
        # The losses sum over many tokens: compute them in float32 at least, outside autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._losses(_float32_at_least(x), z, y_dist, eps, x_cls, y_cls, n_labeled,
                                annotated if y_dist is not None and is_partial(annotated) else None)

    def _losses(self, x: Tensor, z: Optional[Tensor], y_dist: Optional[Tensor], eps: Optional[Tensor],
                x_cls: Optional[Tensor], y_cls: Optional[Tensor], n_labeled: int,
                annotated: Optional[Tensor] = None) -> dict[str, Tensor]:
        """The loss terms (see :meth:`forward`); x (B, L, F) and z (B, L, D) in float32 or float64."""
        cfg = self.config
        terms: dict[str, Tensor] = {}
        total = x.new_zeros(())
        if z is not None:
            z = _float32_at_least(z)
            asg = self.assign(z)
        if cfg.use_cdba:
            samples = sample_proxies(self.proxies, cfg.num_samples, eps)
            # mean_s <z, u_s> = <z, mean_s u_s>: S times fewer products than the (B, L, C, S) tensor.
            sim = torch.einsum("bld,cd->blc", z, samples.mean(dim=1))
            w_unlabeled = asg.bi[n_labeled:].detach()
            w_labeled = None if y_dist is None else y_dist.to(sim.dtype)
            if w_labeled is not None and annotated is not None:
                w_labeled = partial_token_weights(w_labeled, asg.bi[:n_labeled], annotated)
            w = w_unlabeled if w_labeled is None else torch.cat([w_labeled, w_unlabeled.to(sim.dtype)], dim=0)
            terms["p2e"] = p2e_loss(sim, w)
            terms["e2p"] = e2p_loss(sim, w)
            terms["proxy"] = terms["p2e"] + cfg.e2p_weight * terms["e2p"]
            total = total + cfg.proxy_weight * terms["proxy"]
        if cfg.use_kl:
            terms["kl"] = symmetric_kl(asg.p_p2e, asg.p_e2p, cfg.kl_clamp, cfg.kl_reduction)
            total = total + cfg.kl_weight * terms["kl"]
        if cfg.use_sac and (x_cls is not None or y_dist is not None):
            if x_cls is not None and y_cls is None:
                raise ValueError("x_cls needs its class ids y_cls.")
            with torch.no_grad():  # anchors are stop-gradient: only the proxy means learn from SAC
                if x_cls is None:
                    anchors = y_dist.to(x.dtype)
                    if annotated is not None:
                        anchors = annotated_anchor_proportions(anchors, annotated)
                    x_cls, y_cls = class_tokens(x[:n_labeled], anchors, cfg.min_class_mass)
                z_cls = self.embed(_float32_at_least(x_cls))
            terms["sac"] = sac_loss(z_cls, y_cls.long(), self.proxy_means_unit())
            total = total + cfg.sac_weight * terms["sac"]
        terms["total"] = cfg.lam * total
        return terms


def _float32_at_least(t: Tensor) -> Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged (the loss runs in the dtype given)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
