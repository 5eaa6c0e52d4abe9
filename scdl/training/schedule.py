"""The paper's poly learning-rate schedule, ``lr_it = lr · (1 − it / max_it)^power``, in closed form.

``torch.optim.lr_scheduler.PolynomialLR`` computes the same values recursively (each step multiplies the last
learning rate), which stays at 0 for ever once the schedule has ended: a finished run extended with
``--resume --iterations N`` would never learn again. The closed form (a ``LambdaLR``) starts from the base rate
at every step, so extending only changes ``max_it``.
"""

from __future__ import annotations

import torch


class PolyDecay:
    """Factor ``max(0, 1 − it / total)^power`` of the base learning rate (a callable object: its state is saved)."""

    def __init__(self, total: int, power: float = 0.9):
        self.total = int(total)
        self.power = float(power)

    def __call__(self, iteration: int) -> float:
        return max(0.0, 1.0 - iteration / self.total) ** self.power


def poly_scheduler(optimizer: torch.optim.Optimizer, total: int, power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to ``step()`` once per iteration; ``scheduler.lr_lambdas[0].total`` is the schedule's end."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, PolyDecay(total, power))


def set_total(scheduler: torch.optim.lr_scheduler.LambdaLR, total: int) -> None:
    """Move the end of the schedule (a resumed run with another iteration count)."""
    for decay in scheduler.lr_lambdas:
        decay.total = int(total)
