"""Test helper: small random-weight model packages (for inference, training and Slicer-module tests).

The weights are random (seeded): such a package segments nothing meaningful and must never be shipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union


def make_tiny_package(out_dir: Union[str, os.PathLike], table: str = "synapse", n_filters: int = 2,
                      ensemble: int = 2, spacing: Sequence[float] = (6.0, 6.0, 6.0),
                      patch: Sequence[int] = (32, 32, 32), seed: int = 0, model_id: str = "tiny-test-model",
                      norm: str = "batch") -> Path:
    """Write a random-weight VNet package at ``out_dir`` (a folder, or one file if it ends in ``.scdlmodel``).

    Args:
        table: label table (bundled name or CSV path); the networks get ``table.num_classes`` outputs.
        n_filters: VNet width. ensemble: number of networks (CPS pair = 2).
        spacing: model spacing (x, y, z) in mm (preprocessing mode "spacing", orientation LPS).
        patch: sliding-window patch (x, y, z); each a multiple of 16.
        seed: torch seed: the same arguments give byte-identical weights.

    Batch-norm running statistics are randomised (mean in [-0.1, 0.1], variance in [0.5, 1.5]) so that
    eval-mode mistakes show up in outputs.
    """
    import torch

    from scdl.labels.table import LabelTable
    from scdl.models.card import new_card
    from scdl.models.package import save_package
    from scdl.networks.init import init_weights
    from scdl.networks.vnet import build_network

    labels = LabelTable.load(table)
    arch = {"name": "vnet", "in_channels": 1, "n_classes": labels.num_classes, "n_filters": int(n_filters),
            "norm": norm}
    generator = torch.Generator().manual_seed(seed)
    states = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for index in range(ensemble):
            net = init_weights(build_network(arch), ("kaiming", "xavier")[index % 2])
            for module in net.modules():
                if isinstance(module, torch.nn.BatchNorm3d):
                    module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
                    module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            states.append({k: v.clone() for k, v in net.state_dict().items()})
    card = new_card(
        id=model_id,
        title=f"Tiny random test model ({labels.num_classes} classes, {n_filters} filters)",
        architecture=arch,
        ensemble=ensemble,
        preprocessing={"mode": "spacing", "spacing_mm": [float(v) for v in spacing], "orientation": "LPS",
                       "patch_size": [int(v) for v in patch], "window": [-125.0, 275.0], "scale": [0.0, 1.0]},
        description="Random weights for tests. Segments nothing meaningful.",
        provenance={"data": "none (random weights)", "framework": "none", "iterations": 0},
        intended_use="Software tests only.",
        licence="Apache-2.0",
        warnings=["random weights: for tests only"],
    )
    return save_package(out_dir, card, states, labels)
