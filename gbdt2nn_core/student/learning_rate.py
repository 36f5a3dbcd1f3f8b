"""The students' learning rate: its base (``lr``, a number or ``"auto"`` from the batch size) and its course over the
epochs (``lr_schedule``): constant, or annealed along half a cosine."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["epoch_learning_rate", "learning_rate_choice", "learning_rate_for_batch", "set_learning_rate"]

#: ``lr="auto"``: DeepGBM's 1e-3 for batches below this many rows, 3e-3 from it on.
_LARGER_RATE_FROM_ROWS, _SMALL_BATCH_RATE, _LARGE_BATCH_RATE = 128, 1e-3, 3e-3


def learning_rate_for_batch(rows_per_step: int) -> float:
    """The base learning rate ``"auto"`` resolves to for batches of ``rows_per_step`` rows: 3e-3 from 128 rows on,
    DeepGBM's 1e-3 below.

    Measured over ten datasets of the quality suite (RESULTS.md, "A higher learning rate"): at 3e-3 both students
    gained on every dataset with batches of 128 rows or more (flights-30k's aligned AUC 0.7386 → 0.7426, California
    housing's aligned RMSE 0.4599 → 0.4578; 5e-3 was no better on the two sets tried), while digits, at 64-row
    batches (20 steps an epoch, a 140-row validation set that picked epochs 0–5), lost accuracy at 3e-3 (0.9741 →
    0.9639) and at 2e-3 (0.9685). The batch, not the number of steps an epoch, decides: with a batch pinned large
    for small data (5,000 adult rows in batches of 256, 14 steps an epoch; California housing in batches of 512, 29)
    3e-3 was as good as 1e-3 or better for both students (adult over ten seeds: aligned AUC +0.0019 ± 0.0029).
    """
    return _LARGE_BATCH_RATE if rows_per_step >= _LARGER_RATE_FROM_ROWS else _SMALL_BATCH_RATE


def learning_rate_choice(lr: float | str, rows_per_step: int) -> tuple[float, dict[str, Any]]:
    """The base learning rate for a student's ``lr`` option (a number, or ``"auto"``: :func:`learning_rate_for_batch`)
    at batches of ``rows_per_step`` rows, with its record for the run's ``student_choices``."""
    if lr == "auto":
        rate = learning_rate_for_batch(rows_per_step)
        return rate, {"rate": rate, "why": f"auto: batches of {rows_per_step} rows (3e-3 from 128 rows, 1e-3 below)"}
    return float(lr), {"rate": float(lr), "why": "as configured"}


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
