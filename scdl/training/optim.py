"""The optimiser of a training run, built from the config's ``optimizer`` group.

``sgd`` is the paper's (METHOD.md §2: SGD, lr 0.01, momentum 0.9, weight decay 1e-4, poly decay). ``adamw``
(ours) uses the same ``lr``, ``weight_decay`` and poly decay with torch's default betas; it is offered because
runs of a few hundred CPU iterations learn little with the paper's SGD (docs/training.md, "Optimiser").
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch


def make_optimizer(parameters: Iterable[torch.nn.Parameter], settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``settings``: the ``optimizer`` config group (``name`` missing in runs made before it existed: SGD)."""
    name = str(settings.get("name", "sgd"))
    params = list(parameters)
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                               weight_decay=float(settings["weight_decay"]),
                               nesterov=bool(settings.get("nesterov", False)))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"]))
    raise ValueError(f"unknown optimizer {name!r} (sgd or adamw)")
