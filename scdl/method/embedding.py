"""Embedding MLP of the SCDL head (METHOD.md §4.2), with the authors' layer indices."""

from __future__ import annotations

from torch import nn


def embedding_mlp(in_dim: int, hidden_dim: int = 512, out_dim: int = 256, dropout: float = 0.2) -> nn.Sequential:
    """``Linear(in→hidden), ReLU, Dropout, Linear(hidden→hidden), ReLU, Dropout, Linear(hidden→out)``.

    The linear layers sit at indices 0, 3 and 6 (``encoder.0/.3/.6`` in the authors' state dict).
    Maps (..., in_dim) -> (..., out_dim); L2 normalisation is applied by the caller.
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_dim),
    )
