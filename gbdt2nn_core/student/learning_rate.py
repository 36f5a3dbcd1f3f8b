"""The students' learning rate over the epochs (``lr_schedule``): constant, or annealed along half a cosine."""

from __future__ import annotations

import math

import torch

__all__ = ["epoch_learning_rate", "set_learning_rate"]


def epoch_learning_rate(schedule: str, base: float, epoch: int, budget: int) -> float:
    """The learning rate of ``epoch`` (0-based) in a budget of ``budget`` epochs: ``base`` throughout
    (``"constant"``), or half a cosine from ``base`` at epoch 0 towards 0 after the budget (``"cosine"``, SGDR's
    annealing without restarts, stepped once an epoch so that a resumed run sets the same rate from its epoch).
    Early stopping may end the run before the rate is low."""
    if schedule == "constant":
        return base
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(budget, 1)))


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    """Every parameter group of ``optimizer`` steps at ``rate`` from now on."""
    for group in optimizer.param_groups:
        group["lr"] = rate
