"""The SCDL module (METHOD.md §4): tokens, embedding head, Gaussian proxies, CDBA, KL and SAC.

The names below load on first use (PEP 562), so that ``scdl.method.config`` (the SCDL settings and their
paper defaults) can be imported without torch, e.g. by the Slicer panel at run time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "Assignments": "assignments", "soft_assignments": "assignments",
    "e2p_loss": "cdba", "p2e_loss": "cdba", "symmetric_kl": "cdba",
    "SCDLConfig": "config",
    "embedding_mlp": "embedding",
    "SCDLHead": "head",
    "init_proxies": "proxies", "proxy_means": "proxies", "proxy_sigmas": "proxies", "sample_proxies": "proxies",
    "class_anchors": "sac", "sac_loss": "sac",
    "class_proportions": "tokens", "class_tokens": "tokens", "pool_tokens": "tokens",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from scdl.method.assignments import Assignments, soft_assignments  # noqa: F401
    from scdl.method.cdba import e2p_loss, p2e_loss, symmetric_kl  # noqa: F401
    from scdl.method.config import SCDLConfig  # noqa: F401
    from scdl.method.embedding import embedding_mlp  # noqa: F401
    from scdl.method.head import SCDLHead  # noqa: F401
    from scdl.method.proxies import init_proxies, proxy_means, proxy_sigmas, sample_proxies  # noqa: F401
    from scdl.method.sac import class_anchors, sac_loss  # noqa: F401
    from scdl.method.tokens import class_proportions, class_tokens, pool_tokens  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scdl.method' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"scdl.method.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
