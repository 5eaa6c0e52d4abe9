"""The SCDL module (METHOD.md §4): tokens, embedding head, Gaussian proxies, CDBA, KL and SAC."""

from scdl.method.assignments import Assignments, soft_assignments
from scdl.method.cdba import e2p_loss, p2e_loss, symmetric_kl
from scdl.method.config import SCDLConfig
from scdl.method.embedding import embedding_mlp
from scdl.method.head import SCDLHead
from scdl.method.proxies import init_proxies, proxy_means, proxy_sigmas, sample_proxies
from scdl.method.sac import class_anchors, sac_loss
from scdl.method.tokens import class_proportions, class_tokens, pool_tokens

__all__ = [
    "Assignments", "SCDLConfig", "SCDLHead", "class_anchors", "class_proportions", "class_tokens",
    "e2p_loss", "embedding_mlp", "init_proxies", "p2e_loss", "pool_tokens", "proxy_means", "proxy_sigmas",
    "sac_loss", "sample_proxies", "soft_assignments", "symmetric_kl",
]
